"""The embedded demo with a *random* micro ResNet teacher instead of the pretrained one: the contrast run.

    python train.py --config=configs/synthetic_random_teacher.py --workdir=runs/synthetic_random_teacher

Same data, student and schedule as configs/synthetic.py; only the teacher differs. MMR's premise is a frozen
pretrained teacher whose features the student learns to reconstruct: with a random network as the teacher the
reconstruction gap says little about defects (README, "The embedded demo"). The tests train this config at tiny
sizes, since it needs no weights at all.
"""

from configs import synthetic


def get_config():
  c = synthetic.get_config()
  c.model.teacher = "resnet_micro"
  c.init.teacher = ""
  return c
