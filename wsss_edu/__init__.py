"""wsss_edu: the helper package of a notebook course on weakly-supervised semantic segmentation.

Where things are (each module's docstring says more; modules import each other at the top, in one
direction — ``tests/test_layout.py``):

Each paper's method — the equations, losses and networks a learner studies (each function's
docstring cites the paper and equation) — in a module of its own, one level down from it the cached
pipeline step that runs it over a dataset (``wsss_edu.steps``: configs and cache keys, per-image
passes in worker processes, resumable folders, the quick / full profiles, the entry points the
notebooks call):

  paper, part                             method             cached step (steps.)  notebooks
  000  aleatoric logits, bootstrapping    label_uncertainty  lu_experiments        02, 02b
  001  step 1: the classifier and CAMs    cam                cam_step              03-08
  001  step 2: IRNet and the random walk  irnet              irnet_step            04-06
  001  step 3: DeepLabv3+ and TTA         models             segmenter_step        05-08
  002  URN                                urn                urn_step              06
  003  RRM                                rrm                rrm_step              07
  all  every step above timed on a GPU    -                  gpu_check             make gpu-check

A method module imports only the substrate and other methods, never a step nor the plumbing
(``tests/test_layout.py``).

The substrate every method shares: ``toy`` (the toy world), ``datasets`` (VOC, MSRC, ... and
``PseudoLabeled``), ``labels`` (the sample format, the VOC palette), ``data`` (tensors, augmentation,
batching), ``io`` (images and masks on disk), ``errors``, ``pretrained`` (ImageNet weights),
``crf`` (with ``crf_torch``, its PyTorch backend), ``metrics``, ``stats``, ``train`` (the training loop), ``distributed`` (the same loop on N
processes), ``progress`` (progress bars, or log lines when headless), ``threads`` (threads per process,
passive OpenMP waiting, DataLoader workers: decided in one place), ``viz``.

The plumbing: ``params`` (the parameters every notebook shares), ``cache`` and ``results`` (artifacts
and headline numbers under OUTPUT_DIR), ``parallel`` (worker processes), ``download``, ``runner``
(every notebook through papermill), ``pipeline`` (the full-scale run and its report), ``compare``
(the methods side by side), ``nbtools`` (notebook housekeeping), ``versions`` (``show_versions()``:
what a bug report needs), ``course`` (the notebooks copied out of an installed package), and the
data commands ``prepare_voc_trainaug`` and ``write_toy_voc`` (``python -m wsss_edu.<name>``, as
``download``), ``colab`` (the notebooks' Colab install cell).
"""

# The one place the version is written: pyproject.toml reads it (statically, setuptools' ``attr:``),
# CITATION.cff and CHANGELOG.md repeat it (tests/test_install_hygiene.py checks they agree).
__version__ = "0.2.0"


def show_versions(file=None) -> dict:
    """Print, and return as a dict, the versions a bug report needs: this package, Python, the
    platform, torch and what it can run on, every library the course uses
    (:func:`wsss_edu.versions.show_versions`; also ``python -m wsss_edu.versions``)."""
    # imported on first use: `python -m wsss_edu.versions` must find the module not yet imported
    from .versions import show_versions as show

    return show(file)
