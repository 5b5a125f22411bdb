"""The cached pipeline steps: each runs one paper's method (the modules one level up) over a dataset,
with its settings (quick / full profiles, defined once here), its cache keys, its per-image passes
in worker processes and its resumable folders — what the notebooks and the full-scale pipeline call.

* :mod:`.lu_experiments`: paper 000's Tables 1-2 (method: :mod:`wsss_edu.label_uncertainty`);
* :mod:`.cam_step`: paper 001's step 1, the classifier and its CAM folders (:mod:`wsss_edu.cam`);
* :mod:`.irnet_step`: paper 001's step 2, IRNet and the walk's pseudo-labels (:mod:`wsss_edu.irnet`);
* :mod:`.segmenter_step`: paper 001's step 3, DeepLabv3+ trained on pseudo-labels and scored with
  test-time augmentation (:mod:`wsss_edu.models`); URN's and RRM's retraining use it too;
* :mod:`.urn_step`: paper 002's uncertainty pass over a training set (:mod:`wsss_edu.urn`);
* :mod:`.rrm_step`: paper 003's network trained end to end (:mod:`wsss_edu.rrm`).
* :mod:`.gpu_check`: every full-profile training step and per-image pass above, timed on a GPU
  (``make gpu-check``).
"""
