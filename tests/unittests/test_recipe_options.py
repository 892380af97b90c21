"""Recipe command-line options that SpeechBrain's parser takes too narrowly."""

import time

import pytest
import speechbrain as sb
from speechbrain.utils.checkpoints import Checkpointer

from speechpos.recipes import ConfigError, load_recipe_hparams

HPARAMS = "seed: 1\nckpt_interval_minutes: 15\n"


def test_a_fraction_of_a_minute_checkpoints_every_few_seconds(tmp_path):
    """SpeechBrain's parser refused --ckpt_interval_minutes=0.05 ("invalid int value"), so a test
    or a short run could not checkpoint mid-epoch more often than every minute."""
    hparams = tmp_path / "x.yaml"
    hparams.write_text(HPARAMS)
    _, run_opts, _, hp = load_recipe_hparams([str(hparams), "--ckpt_interval_minutes=0.05"], __file__)
    brain = sb.Brain(modules={}, hparams=hp, run_opts=run_opts,
                     checkpointer=Checkpointer(tmp_path / "save"))
    assert brain.ckpt_interval_minutes == 0.05  # over the hparams file's 15
    assert not brain._should_save_intra_epoch_ckpt(time.time() - 2, steps_since_ckpt=1)
    assert brain._should_save_intra_epoch_ckpt(time.time() - 4, steps_since_ckpt=1)


def test_the_hparams_value_stands_without_the_option_and_a_word_is_refused(tmp_path):
    hparams = tmp_path / "x.yaml"
    hparams.write_text(HPARAMS)
    _, run_opts, _, hp = load_recipe_hparams([str(hparams)], __file__)
    assert sb.Brain(modules={}, hparams=hp, run_opts=run_opts).ckpt_interval_minutes == 15
    with pytest.raises(ConfigError, match="--ckpt_interval_minutes must be a number of minutes, got 'soon'"):
        load_recipe_hparams([str(hparams), "--ckpt_interval_minutes=soon"], __file__)
