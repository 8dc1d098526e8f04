"""MMR on your own images, sized for a CPU: the demo's model (pretrained EfficientNet-Lite0 teacher, small ViT
student trained from scratch) on any folder in the `folder` layout.

    python train.py --config=configs/folder.py --workdir=runs/my_part --config.data.root=DIR

DIR/train/good/* holds normal images only; DIR/test/good/* and DIR/test/<defect type>/* are scored; masks
DIR/ground_truth/<defect type>/<name>_mask.png are optional (without DIR/ground_truth only image-level metrics
are reported). Any image size, PNG/JPEG/BMP/TIFF: images larger than `data.max_image_side` are shrunk once when
decoded, and each epoch makes at least `data.min_epoch_images` crops (several passes over a small training set,
each with its own order and augmentation), so that 30 or 3,000 training images both train well. Check the
folder first with `python -m mmr_jax check_data --config=configs/folder.py --config.data.root=DIR`.

On an accelerator, scale towards the published setting: `--config.data.image_size=224
--config.data.resize_size=256 --config.data.max_image_side=0 --config.model.vit.depth=12
--config.num_epochs=200 --config.optim.warmup_epochs=50 --config.optim.decay_epochs='(120,160)'`, a larger
teacher (`--config.model.teacher=wide_resnet50_2 --config.init.teacher=wide_resnet50_2`, a download), and the
MAE student (`--config.init.student=mae_visualize_vit_base` with `--config.model.vit=...` for ViT-B; see
configs/aebad_s.py).
"""

from configs import synthetic


def get_config():
  c = synthetic.get_config()
  c.data.name = "folder"
  c.data.root = ""  # Required: --config.data.root=DIR.
  c.data.synthetic = False
  c.data.min_epoch_images = 320
  c.data.max_image_side = 512
  return c
