"""Semantic-segmentation domain adaptation on top of uda_ops: DeepLab-v2-style networks, a procedural
synthetic-to-real street-scene shift, GTA5 / SYNTHIA / Cityscapes loaders, mIoU, and the source-only, MinEnt,
AdvEnt, CLAN, I2I, ADR and DTA trainers (run through ``python -m models.train`` / ``models.compare``)."""
from .networks import (ASPP, DeepLabV2, FCDiscriminator, ResNetBackbone, build_discriminator, build_segmenter,
                       load_imagenet_weights)
from .metrics import confusion_matrix, iou_from_confusion

__all__ = ["ASPP", "DeepLabV2", "FCDiscriminator", "ResNetBackbone", "build_discriminator", "build_segmenter",
           "load_imagenet_weights", "confusion_matrix", "iou_from_confusion"]
