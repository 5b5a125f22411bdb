"""wsss_edu: the helper package of a notebook course on weakly-supervised semantic segmentation.

Where things are (each module's docstring says more; modules import each other at the top, in one
direction — ``tests/test_layout.py``):

Each paper's method — the equations, losses and networks a learner studies (each function's
docstring cites the paper and equation):

* paper 000, aleatoric logits and online bootstrapping: ``label_uncertainty`` (its experiment
  harness for notebooks 02-02b from the section "Experiments");
* paper 001, step 1, the classifier and its CAMs: ``cam`` (the cached step 1 of notebooks 03-08
  from the section "Step 1 as a pipeline": ``step1``, ``step1_data``, ``cached_step1``,
  ``cached_cams``, ``STEP1_PROFILE``);
* paper 001, step 2, IRNet and the random walk: ``irnet`` (the cached step 2 from "Step 2 end to
  end": ``step2``, ``step2_config``, ``STEP2_PROFILE``);
* paper 001, step 3, DeepLabv3+ and test-time augmentation: ``models``, trained and scored on
  pseudo-labels by ``pseudo`` (``step3_config``, ``STEP3_PROFILE``);
* paper 002, URN: ``urn`` (its uncertainty pass over a training set from the section of that name);
* paper 003, RRM: ``rrm`` (its cached networks and pseudo-labels after the joint loss).

The substrate every method shares: ``toy`` (the toy world), ``datasets`` (VOC, MSRC, ... and
``PseudoLabeled``), ``labels`` (the sample format, the VOC palette), ``data`` (tensors, augmentation,
batching), ``pretrained`` (ImageNet weights), ``crf``, ``metrics``, ``stats``, ``train`` (the
training loop), ``distributed`` (the same loop on N processes), ``viz``.

The plumbing: ``params`` (the parameters every notebook shares), ``cache`` and ``results`` (artifacts
and headline numbers under OUTPUT_DIR), ``io``, ``errors``, ``parallel`` (worker processes),
``download``, ``runner`` (every notebook through papermill), ``pipeline`` (the full-scale run and
its report), ``compare`` (the methods side by side), ``nbtools`` (notebook housekeeping).
"""
__version__ = "0.1.0"
