"""Layer kinds. Importing this package registers every kind once.

Convention: a family of kinds lives in ``<family>.py`` (pure Python: the
argument schema, shape, params, MACs/FLOPs, backward, saved tensors, receptive
field, cost model, lint remarks and ``build``). The nn.Module classes
torch.nn lacks that its kinds build live beside it in ``<family>_torch.py``
(e.g. ``conv.py`` -> ``conv_torch.py``: PartialConv2d, LocallyConnected2d),
imported only inside ``build``, so analysing a spec never imports torch. A
kind names those classes in ``torch_classes``; ``Kind.module_classes()``
returns them, and ``archcalc export`` copies them into exported files from
there. Tables of kinds elsewhere are derived from the kinds' attributes.
"""
from .base import REGISTRY, Arg, Kind, Saved, kinds, lookup, register  # noqa: F401
from . import conv, pool, linear, norm, activation, resample, se, shuffle, tokens, opaque  # noqa: F401,E501  (registration)
from . import multiply, reshape, spp, dropconnect  # noqa: F401  (registration: the lectures' later systems)
from . import roi  # noqa: F401  (registration: detection's second stage)
from . import boxes  # noqa: F401  (registration: single-shot detectors)
from . import transform  # noqa: F401  (registration: spatial transformers)
from . import crop, frozen_norm  # noqa: F401  (registration: U-Net's copy and crop; detection backbones' frozen batch norm)
from . import window_attention  # noqa: F401  (registration: Swin's and MaxViT's window attention)
from . import pad  # noqa: F401  (registration: padding as a row, TF-style same padding)
from . import std_conv  # noqa: F401  (registration: weight-standardized conv, NF-ResNet and NFNet)
from . import affine  # noqa: F401  (registration: ResMLP's per-channel scale and shift)
from . import transpose  # noqa: F401  (registration: token mixing, MLP-Mixer and ResMLP)
from . import grn  # noqa: F401  (registration: ConvNeXt V2's global response norm)
from . import slice  # noqa: F401  (registration: one slice of the channels, Res2Net and DPN)
from . import attention_pool  # noqa: F401  (registration: attention pooling, SigLIP's map head)
from . import glu  # noqa: F401  (registration: gated MLPs, gMLP-Mixer's GluMlp)
from . import bottleneck_attention  # noqa: F401  (registration: BoTNet's self-attention on a map)
from . import halo_attention  # noqa: F401  (registration: HaloNet's blocked local self-attention)
from . import lambda_layer  # noqa: F401  (registration: LambdaNetworks' lambda layer)
from . import fourier_position  # noqa: F401  (registration: XCiT's and EdgeNeXt's Fourier position encoding)
from . import patchify  # noqa: F401  (registration: patches as tokens, a linear patch embedding's input)
from . import global_context  # noqa: F401  (registration: GCNet's global context block)
from . import split_attention, selective_kernel  # noqa: F401  (registration: ResNeSt's split attention, SKNet's selective kernel)
from . import cait  # noqa: F401  (registration: CaiT's class and talking-heads attention, XCiT's XCA)
from . import rms_norm  # noqa: F401  (registration: RMS norm and timm's SimpleNorm)
from . import metaformer  # noqa: F401  (registration: MetaFormer's StarReLU, squared ReLU, PoolFormer's pool mixer)
from . import evo_norm  # noqa: F401  (registration: EvoNorm and filter response norm)
from . import blur_pool  # noqa: F401  (registration: the blur pool, anti-aliased downsampling)
from . import rope_attention  # noqa: F401  (registration: rotary self-attention, EVA-02, ROPE-ViT, DINOv3)
from . import conv_mlp  # noqa: F401  (registration: VGG's conv classifier, timm's ConvMlp)
from . import pvt  # noqa: F401  (registration: PVT v2's spatial-reduction attention)
from . import relpos_attention  # noqa: F401  (registration: vit_relpos's attention with an MLP relative position bias)
from . import window_attention_cr  # noqa: F401  (registration: timm Swin V2-cr window attention)
from . import iformer  # noqa: F401  (registration: iFormer's single-head modulation attention)
from . import nextvit  # noqa: F401  (registration: Next-ViT's E-MHSA, keys and values pooled along the sequence)
from . import convit  # noqa: F401  (registration: ConViT's gated positional self-attention)
from . import maxxvit  # noqa: F401  (registration: timm MaxViT/CoAtNet map attention and partition transformer)
from . import focal_modulation  # noqa: F401  (registration: FocalNet's focal modulation)
from . import lowformer  # noqa: F401  (registration: LowFormer's low-resolution attention)
from . import space_to_depth  # noqa: F401  (registration: TResNet's space to depth)
from . import twins  # noqa: F401  (registration: Twins-SVT's locally-grouped attention)
from . import mqa  # noqa: F401  (registration: MobileNetV4's multi-query attention on a map)
from . import spatial_gating  # noqa: F401  (registration: gMLP's spatial gating unit)
from . import levit  # noqa: F401  (registration: LeViT's attention, conv form)
from . import gated_conv  # noqa: F401  (registration: MambaOut's gated CNN block)
from . import attention_pool_2d  # noqa: F401  (registration: CLIP's attention pooling of a map)
from . import efficientformer  # noqa: F401  (registration: EfficientFormer's attention with attention biases)
from . import parallel_block  # noqa: F401  (registration: ViT-22B's parallel block, timm's ParallelScalingBlock)
from . import efficientvit  # noqa: F401  (registration: EfficientViT's LiteMLA, MIT; its cascaded attention, MSRA)
from . import cpubone  # noqa: F401  (registration: CPUBone's low-resolution attention)
from . import davit  # noqa: F401  (registration: DaViT's channel attention and spatial block)
from . import volo  # noqa: F401  (registration: VOLO's outlook attention)
from . import crossvit  # noqa: F401  (registration: CrossViT's cross attention, the resize of its second branch's image)
from . import tiny_vit  # noqa: F401  (registration: TinyViT's block, window attention with offset biases)
from . import gcvit  # noqa: F401  (registration: GCViT's stage, global query window attention)
from . import diff_attention  # noqa: F401  (registration: DIFF Transformer's differential attention)
from . import mobilevit  # noqa: F401  (registration: MobileViT v1's and v2's blocks)
