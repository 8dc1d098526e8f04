"""Defaults shared by every config: the published MMR setting (ViT-B/16 student, WideResNet50-2 teacher, 224²).

Per-dataset configs import `get_config()` from here and override only what differs. Every key that a run may
use exists here, so that `mmr_jax.config.validate` can reject unknown keys and bad values on the command line.
Facts follow `docs/spec.md`; section numbers below refer to it.
"""

import ml_collections

# Student encoder sizes (MAE/ViT conventions; head width 64).
VIT_SIZES = {
  "Ti": dict(width=192, depth=12, num_heads=3),
  "S": dict(width=384, depth=12, num_heads=6),
  "B": dict(width=768, depth=12, num_heads=12),
  "L": dict(width=1024, depth=24, num_heads=16),
  # For tests and the CPU demo only.
  "micro": dict(width=128, depth=2, num_heads=2),
}


def vit_config(size: str = "B") -> ml_collections.ConfigDict:
  return ml_collections.ConfigDict(
    dict(
      size=size,
      patch_size=16,
      mlp_ratio=4.0,
      # Grid of the fixed sin-cos table that the pretrained encoder carries (224 / 16); other image sizes
      # resize it with PyTorch's bicubic interpolation (§1).
      pretrain_grid=14,
      **VIT_SIZES[size],
    )
  )


def published_resize(image_size: int) -> int:
  """data.resize_size for an image size at the published resize-to-crop ratio 256 / 224 (160 → 183, 320 → 366)."""
  return round(image_size * 256 / 224)


def get_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.seed = 54  # The published code's single seed.
  # Number of independent models (seeds seed, seed+1, ...) trained side by side in one compiled program.
  c.num_seeds = 1
  c.num_epochs = 200
  c.batch_size = 16  # Global batch, split over the mesh's data axis.
  c.eval_batch_size = 32
  c.eval_every_epochs = 0  # 0: evaluate at the end of training only.
  c.checkpoint_every_epochs = 1
  c.keep_checkpoints = 2
  c.log_every_steps = 10

  c.data = ml_collections.ConfigDict(
    dict(
      name="aebad_s",  # aebad_s | aebad_v | mvtec | folder
      root="data",
      # Subsets evaluated separately, then averaged (AeBAD-S domains, AeBAD-V videos, MVTec classes).
      subsets=("same", "background", "illumination", "view"),
      image_size=224,
      resize_size=256,  # Test: resize to this square, then centre-crop image_size (§7).
      crop_scale=(0.7, 1.0),  # Train: RandomResizedCrop (bicubic) on the original image.
      crop_ratio=(3.0 / 4.0, 4.0 / 3.0),
      hflip_prob=0.5,
      # False: masks count as anomalous only where they equal their maximum after resizing, as the published
      # code's int cast does. True: threshold the resized mask at 0.5.
      strict_mask_binarization=False,
      skip_bad_files=False,  # True: skip (and count) files that do not decode instead of stopping.
      use_tfds=False,  # Read through the TFDS builders (manual_dir = data.root) instead of the folder readers.
      tfds_data_dir="",  # Where TFDS prepares its copy ("": DATA_ROOT/tensorflow_datasets).
      cache=True,  # Keep decoded images in memory (the datasets are small).
      shuffle_buffer=0,  # 0: shuffle the whole training set each epoch.
      # 0: an epoch is one pass over the training set (published). N: as many passes as reach N images, each
      # with its own order and augmentation (configs/folder.py, for small sets of one's own).
      min_epoch_images=0,
      # False (published: DataLoader drop_last=False): an epoch's last, smaller batch is trained, its loss the
      # mean over its real images. True: only full batches, as most JAX input pipelines do.
      drop_last=False,
      # Fraction of the normal training images held out (never trained on) to calibrate a decision threshold at
      # the end of training (mmr_jax/calibration.py). 0, the published protocol: every image is trained on and the
      # threshold stays uncalibrated. The demo and configs/folder.py hold out 0.1.
      calibration_fraction=0.0,
      # 0: keep the decoded originals (published). N: shrink images whose longer side exceeds N pixels once, at
      # decoding (antialiased; masks alike), so that large photographs fit in memory and resample fast.
      max_image_side=0,
      # True: generate the embedded AeBAD-like dataset under root if it is absent (configs/synthetic.py).
      synthetic=False,
      synthetic_seed=0,
    )
  )

  c.model = ml_collections.ConfigDict(
    dict(
      vit=vit_config("B"),
      # wide_resnet50_2 | resnet50 | resnet18 | efficientnet_lite0/1/2 | resnet_micro (random; tests). Its widths
      # set the FPN's (§2); models/teachers.py lists them.
      teacher="wide_resnet50_2",
      mask_ratio=0.4,  # Training mask ratio; testing uses 0 (§1, §5).
      # float32 | bfloat16: dtype of matmuls and activations; parameters, loss and maps stay float32.
      compute_dtype="float32",
      # How the FPN's 3×3 convolutions are computed: "native" (lax.conv) or "im2col" (windows + one matmul); "auto":
      # native, except im2col, the teacher's too, in bfloat16 on a CPU with bf16 matrix instructions
      # (models/layers.py). The same result to rounding.
      conv3x3="auto",
      # Precision of every matmul and convolution of the student and the teacher: "default" (TF32 on GPUs, one
      # bfloat16 pass on TPUs), "high" (bfloat16_3x on TPUs) or "highest" (float32 everywhere). "highest", because
      # the published figures are float32 (the paper's GPU, an RTX 2080 Ti, has no TF32) and the parity proof is
      # float32; "default" is several times faster on GPUs/TPUs for scaling studies. The CPU is float32 in all three.
      precision="highest",
    )
  )

  # AdamW (β = 0.9, 0.95), weight decay 0.05, lr 1e-3 set once per epoch, 50 warm-up epochs, ÷10 after epochs 120
  # and 160: the published values (§6); the parity check's mmr_jax.training.optimizer.published_settings() holds
  # the same (a test keeps them equal).
  c.optim = ml_collections.ConfigDict(
    dict(
      lr=1e-3, warmup_epochs=50, decay_epochs=(120, 160), decay_factor=0.1, weight_decay=0.05, b1=0.9, b2=0.95, eps=1e-8
    )
  )

  c.init = ml_collections.ConfigDict(
    dict(
      # Pretrained weights: a name from mmr_jax.weights.catalog (fetched and cached), a file path, or "" for
      # random initialisation.
      student="mae_visualize_vit_base",
      teacher="wide_resnet50_2",
    )
  )

  c.eval = ml_collections.ConfigDict(
    dict(
      gaussian_sigma=4.0,
      gaussian_truncate=4.0,
      # Heatmap overlays in report.html per subset and kind of image (normal, each defect type): the worst
      # scored first (false positives, misses), then typical ones.
      heatmaps_per_kind=3,
      aupro_fpr_limit=0.3,
      # Mask ratio of the student at test time (the published config's test_mask_ratio): 0 hides nothing. With a
      # ratio > 0 the maps depend on the masking noise, drawn from the run's seed, per subset and batch.
      test_mask_ratio=0.0,
      # False-positive rate on the held-out normals at which the decision threshold is set (predict.py --fpr
      # overrides it).
      threshold_fpr=0.01,
      # 0: the published protocol. K > 0: each test subset is also scored by the model adapted to it from K of its
      # normal images (mmr_jax/adaptation.py; docs/adaptation.md), which are then left out of its metrics.
      adapt_shots=0,
    )
  )
  return c
