"""ImageNet weights: a local file by argument or environment variable (shape-checked, weights_only),
torchvision's download otherwise, and errors that say how to provide one. With the offline
MobileNetV2 file (``../shared/weights`` or ``WSSS_WEIGHTS_DIR``): real photos get sensible classes."""

import pytest
import torch

from wsss_edu import pretrained as pt
from wsss_edu.errors import DataFileError, ParameterError

try:
    from .fixtures_datasets import shared_msrc_root
    from .fixtures_datasets import shared_weights_dir as _shared_weights
except ImportError:
    from fixtures_datasets import shared_msrc_root
    from fixtures_datasets import shared_weights_dir as _shared_weights


@pytest.fixture
def small_arch(monkeypatch):
    """'mobilenet_v2' built at width 0.25 (a few hundred kB) so that files are quick to write."""
    from torchvision import models

    real = models.mobilenet_v2
    monkeypatch.setattr(
        models, "mobilenet_v2", lambda weights=None: real(weights=weights, width_mult=0.25)
    )
    return "mobilenet_v2"


def test_a_local_file_by_argument_or_folder_is_checked_and_loaded(
    tmp_path, monkeypatch, small_arch
):
    from torchvision import models

    monkeypatch.delenv(pt.WEIGHTS_DIR_ENV, raising=False)
    source = models.mobilenet_v2()
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    torch.save(source.state_dict(), tmp_path / "mobilenet_v2_mine.pth")
    net = pt.torchvision_classifier(small_arch, "imagenet", tmp_path / "mobilenet_v2_mine.pth")
    for k, v in source.state_dict().items():
        assert torch.equal(net.state_dict()[k], v), k
    monkeypatch.setenv(pt.WEIGHTS_DIR_ENV, str(tmp_path))
    assert pt.local_weights_file(small_arch) == tmp_path / "mobilenet_v2_mine.pth"
    net2 = pt.torchvision_classifier(small_arch, "imagenet")
    assert torch.equal(net2.features[0][0].weight, source.features[0][0].weight)
    # two candidates: ambiguous, named
    torch.save(source.state_dict(), tmp_path / "mobilenet_v2_other.pth")
    with pytest.raises(DataFileError, match="several mobilenet_v2"):
        pt.local_weights_file(small_arch)


def test_wrong_files_are_refused_with_the_file_and_the_fix(tmp_path, monkeypatch, small_arch):
    from torchvision import models

    monkeypatch.delenv(pt.WEIGHTS_DIR_ENV, raising=False)
    with pytest.raises(DataFileError, match="does not exist"):
        pt.local_weights_file(small_arch, tmp_path / "nope.pth")
    # another architecture: keys and shapes named
    torch.save(models.resnet18().state_dict(), tmp_path / "resnet.pth")
    with pytest.raises(DataFileError, match=r"resnet\.pth do not fit.*missing keys"):
        pt.torchvision_classifier(small_arch, "imagenet", tmp_path / "resnet.pth")
    # the right keys, one shape wrong
    state = models.mobilenet_v2().state_dict()
    state["classifier.1.weight"] = torch.zeros(10, state["classifier.1.weight"].shape[1])
    torch.save(state, tmp_path / "ten_classes.pth")
    with pytest.raises(DataFileError, match=r"classifier\.1\.weight: \(10,"):
        pt.torchvision_classifier(small_arch, "imagenet", tmp_path / "ten_classes.pth")
    # a truncated download
    data = (tmp_path / "ten_classes.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match=r"cut\.pth.*truncated download"):
        pt.torchvision_classifier(small_arch, "imagenet", tmp_path / "cut.pth")
    # a pickled model, not a state_dict: weights_only refuses to run its code
    torch.save(models.mobilenet_v2(), tmp_path / "model.pth")
    with pytest.raises(DataFileError, match=r"model\.pth"):
        pt.torchvision_classifier(small_arch, "imagenet", tmp_path / "model.pth")
    monkeypatch.setenv(pt.WEIGHTS_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(DataFileError, match=f"no mobilenet_v2.*unset {pt.WEIGHTS_DIR_ENV}"):
        pt.local_weights_file(small_arch)
    with pytest.raises(ParameterError, match="mobilenet_v2"):
        pt.local_weights_file("mobilenet_v3")


def test_without_a_file_torchvision_is_asked_and_its_failure_explained(monkeypatch):
    from torchvision.models import MobileNet_V2_Weights

    monkeypatch.delenv(pt.WEIGHTS_DIR_ENV, raising=False)

    def offline(self, *args, **kwargs):
        raise OSError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(MobileNet_V2_Weights, "get_state_dict", offline)
    with pytest.raises(pt.WeightsUnavailableError, match=f"offline.*{pt.WEIGHTS_DIR_ENV}"):
        pt.torchvision_classifier("mobilenet_v2", "imagenet")


@pytest.mark.skipif(
    _shared_weights() is None or shared_msrc_root() is None,
    reason=f"no offline MobileNetV2 weights ({pt.WEIGHTS_DIR_ENV} or ../shared/weights) or no "
    "MSRC v2 (../shared/realdata or WSSS_MSRC_ROOT)",
)
def test_the_offline_mobilenet_names_what_is_in_real_photos(monkeypatch):
    import numpy as np
    from torchvision.models import MobileNet_V2_Weights

    from wsss_edu.data import images_to_tensor
    from wsss_edu.datasets import get_dataset

    monkeypatch.setenv(pt.WEIGHTS_DIR_ENV, str(_shared_weights()))
    net = pt.torchvision_classifier("mobilenet_v2", "imagenet").eval()
    names = MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    ds = get_dataset("msrc", shared_msrc_root(), "test", classes="all")
    # cows and cats: photos where the tag names an ImageNet concept
    wanted = {
        "cow": {"ox", "water buffalo", "bison", "ram", "oxcart"},
        "cat": {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"},
    }
    for tag, synsets in wanted.items():
        k = ds.classes.index(tag) - 1
        picks = [i for i in range(len(ds)) if ds[i]["labels"][k] > 0][:8]
        hits = 0
        for i in picks:
            image = ds[i]["image"]
            x = images_to_tensor(np.ascontiguousarray(image[None]))
            with torch.no_grad():
                top5 = (
                    net(torch.nn.functional.interpolate(x, size=(224, 224), mode="bilinear"))
                    .topk(5)
                    .indices[0]
                )
            hits += any(names[j] in synsets for j in top5.tolist())
        assert hits >= len(picks) // 2, (tag, hits, len(picks))


def test_every_backbone_takes_its_imagenet_weights_from_the_same_place(tmp_path, monkeypatch):
    """CAM classifiers (ResNet-50, MobileNetV2), IRNet's stages and both DeepLab segmenters load
    the file of WSSS_WEIGHTS_DIR: an offline machine needs no download anywhere."""
    from torchvision.models import mobilenet_v2, resnet50

    from wsss_edu import cam, irnet, models

    torch.manual_seed(0)
    r, m = resnet50(), mobilenet_v2()
    torch.save(r.state_dict(), tmp_path / "resnet50_test.pth")
    torch.save(m.state_dict(), tmp_path / "mobilenet_v2_test.pth")
    monkeypatch.setenv(pt.WEIGHTS_DIR_ENV, str(tmp_path))
    stem = r.conv1.weight
    assert torch.equal(cam.CAMClassifier(3, "resnet50", "imagenet").backbone.body[0].weight, stem)
    assert torch.equal(irnet.backbone_stages("resnet50", "imagenet")[0][0].weight, stem)
    assert torch.equal(models.DeepLabV3Plus(3, "resnet50", "imagenet").encoder.stem[0].weight, stem)
    assert torch.equal(
        models.make_segmenter("deeplabv3_resnet50", 3, "imagenet").net.backbone.conv1.weight, stem
    )
    mob = cam.CAMClassifier(3, "mobilenet_v2", "imagenet")
    assert torch.equal(mob.backbone.body[0][0].weight, m.features[0][0].weight)
    # output stride 16 (the last two stages dilated instead of strided), 1280 channels
    x = torch.zeros(1, 3, 64, 96)
    assert mob.features(x).shape == (1, 1280, 4, 6) and mob.cam(x).shape == (1, 3, 4, 6)
    assert mob.stride == 16
