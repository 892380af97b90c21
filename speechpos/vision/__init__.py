"""Vision on the shared position core: ViT patch embedding, ImageFolder data, checkpoints.

- :mod:`~speechpos.vision.patches`: the patch embedding and moving patches around
  (permutations, reassembling an image from predicted positions);
- :mod:`~speechpos.vision.vit`: the unpositioned ViT (a SpeechBrain ``TransformerEncoder``
  inside :class:`~speechpos.position.ContextEncoder`), the classifier, attentive weights;
- :mod:`~speechpos.vision.data`: ``ImageFolder`` with a checked loader, and the transforms;
- :mod:`~speechpos.vision.checkpoint`: strict loading of a pretrained encoder.
"""

from speechpos.vision.checkpoint import (
    CheckpointMismatchError,
    find_encoder_checkpoint,
    load_encoder_state,
)
from speechpos.vision.data import ImageLoadError, image_folder, image_transforms, load_rgb
from speechpos.vision.patches import (
    PatchEmbedding,
    patchify,
    permute_patches,
    reassemble,
    unpatchify,
)
from speechpos.vision.vit import ImageClassifier, VisionTransformer, attentive_weights

__all__ = [
    "CheckpointMismatchError",
    "ImageClassifier",
    "ImageLoadError",
    "PatchEmbedding",
    "VisionTransformer",
    "attentive_weights",
    "find_encoder_checkpoint",
    "image_folder",
    "image_transforms",
    "load_encoder_state",
    "load_rgb",
    "patchify",
    "permute_patches",
    "reassemble",
    "unpatchify",
]
