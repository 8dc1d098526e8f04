"""Config checks: each bad value fails with a message naming the key; list flags in the comma form work."""

import subprocess
import sys

import pytest

from configs import common
from configs import folder
from configs import mvtec
from configs import synthetic
from mmr_jax import config as config_lib
from mmr_jax.data import layouts
from mmr_jax.training import optimizer


def test_the_shipped_configs_validate():
  for config in (common.get_config(), synthetic.get_config()):
    config_lib.validate(config)


def test_facts_the_configs_spell_out_equal_the_librarys():
  """The configs import nothing from mmr_jax (tools/check_imports.py), so the published optimiser and the MVTec
  classes reach them by value: the same values."""
  assert common.get_config().optim.to_dict() == optimizer.published_settings().to_dict()
  assert config_lib.validate(mvtec.get_config()).data.subsets == layouts.MVTEC_CLASSES
  assert config_lib.validate(mvtec.get_config("bottle")).data.subsets == ("bottle",)
  with pytest.raises(config_lib.ConfigError, match=r"unknown MVTec AD class\(es\) botle; .*bottle"):
    config_lib.validate(mvtec.get_config("botle"))


def test_comma_form_of_a_list_is_split():
  config = common.get_config()
  config.data.subsets = ("same,view",)  # What `--config.data.subsets=same,view` gives.
  assert config_lib.validate(config).data.subsets == ("same", "view")
  config = common.get_config()
  config.data.subsets = ("same,,view",)
  with pytest.raises(config_lib.ConfigError, match=r"data\.subsets has an empty entry in 'same,,view'"):
    config_lib.validate(config)


def test_comma_form_on_the_command_line(tmp_path):
  # The flag parser itself, as a user's command line reaches it.
  script = (
    "from absl import app, flags\nfrom ml_collections import config_flags\nfrom mmr_jax import config\n"
    "config_flags.DEFINE_config_file('config', None, '', lock_config=True)\n"
    "app.run(lambda _: print(config.validate(flags.FLAGS.config).data.subsets))\n"
  )
  result = subprocess.run(
    [sys.executable, "-c", script, "--config=configs/synthetic.py", "--config.data.subsets=same,view"],
    capture_output=True,
    text=True,
    check=True,
  )
  assert result.stdout.strip() == "('same', 'view')"


@pytest.mark.parametrize(
  "key,value,message",
  [
    ("data.root", "", r"data\.root is empty: pass --config\.data\.root=DIR"),
    ("data.max_image_side", 100, r"data\.max_image_side \(100\) must be 0 .* ≥ data\.resize_size"),
    ("data.min_epoch_images", -1, r"data\.min_epoch_images must be ≥ 0"),
    ("model.teacher", "efficientnet_b7", r"model\.teacher must be one of .*efficientnet_lite0"),
    ("data.image_size", 150, r"multiple of the patch size 16"),
  ],
)
def test_bad_values_name_their_key(key, value, message):
  config = synthetic.get_config()
  parent, leaf = key.rsplit(".", 1)
  config[parent.split(".")[0]][leaf] = value
  with pytest.raises(config_lib.ConfigError, match=message):
    config_lib.validate(config)


def test_folder_config_needs_only_the_root(tmp_path):
  config = folder.get_config()
  with pytest.raises(config_lib.ConfigError, match="data.root is empty"):
    config_lib.validate(config)
  config.data.root = str(tmp_path)
  config_lib.validate(config)
