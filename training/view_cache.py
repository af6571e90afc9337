"""`wastesort-train teacher-cache`: the teacher's logits for K fixed views of every training photo.

Patient, consistent distillation (Beyer et al., CVPR 2022; FKD, ECCV 2022) wants the student to
match the teacher on the very view it sees, for many epochs. Running the teacher every step
costs as much as the student; here it runs once: each photo gets K view seeds
(training.views.seed_for), the teacher scores each view at its own resolution, and the file
`views.npz` keeps the seeds and logits. The student re-renders view k from its seed at its own
resolution and reads the stored logits (training.distill --views).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .camera_degrade import CameraDegradation
from .data import Sample, get_split
from model.preprocess import PreprocessConfig

from .loop import Timer, make_loader, predict_logits, progress, resolve_device, seed_everything
from .teacher_train import load_teacher_spec
from .view_data import Photos, SeededViews, load_photos, mask_store_for, to_input, view_seeds
from .views import ViewPolicy, view_policy

log = logging.getLogger(__name__)
CACHE_FORMAT = "wastesort-view-cache-1"


@dataclass
class ViewCache:
    """Seeds (N, K) and teacher logits (N, K, C) for the N training photos, in split order."""

    seeds: np.ndarray
    logits: np.ndarray
    class_names: list[str]
    photo_paths: list[str]
    teacher: str
    targets: str = "logits"  # or what AveragedTeacher averaged (teacher-cache --flip-average / --extra-teacher)
    teacher_count: int = 1  # how many teachers' predictions the targets average (the weight in a --merge-with)
    paste_share: float = ViewPolicy().p_paste  # the view family the seeds render with (training.views.view_policy)

    @property
    def policy(self) -> ViewPolicy:
        return view_policy(self.paste_share)

    def save(self, path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, format=CACHE_FORMAT, seeds=self.seeds, logits=self.logits, class_names=np.array(self.class_names), photo_paths=np.array(self.photo_paths), teacher=self.teacher, targets=self.targets, teacher_count=self.teacher_count, paste_share=self.paste_share)
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> "ViewCache":
        if not path.is_file():
            raise FileNotFoundError(f"view cache not found: {path} (make it with `wastesort-train teacher-cache`)")
        d = np.load(path, allow_pickle=False)
        if str(d["format"]) != CACHE_FORMAT:
            raise ValueError(f"{path} is not a view cache of format {CACHE_FORMAT}")
        targets = str(d["targets"]) if "targets" in d.files else "logits"
        count = int(d["teacher_count"]) if "teacher_count" in d.files else 1
        share = float(d["paste_share"]) if "paste_share" in d.files else ViewPolicy().p_paste  # caches before --paste-share
        return cls(d["seeds"], d["logits"], [str(s) for s in d["class_names"]], [str(s) for s in d["photo_paths"]], str(d["teacher"]), targets, count, share)

    def check_matches(self, class_names: list[str], photo_paths: list[str]) -> None:
        """The cache must describe exactly this split: same classes in the same order, same photos."""
        if self.class_names != list(class_names):
            raise ValueError(f"view cache classes {self.class_names} differ from the run's {class_names}")
        if self.photo_paths != list(photo_paths):
            raise ValueError("view cache was made for another training split (photo lists differ); rebuild it")


class AveragedTeacher(torch.nn.Module):
    """The mean prediction of one or more teachers (same input), optionally also over each view's
    mirror image, returned as log probabilities (usable as logits). Measured on the validation
    photos: the fine-tuned Lite0 teacher of 2026-12-01 goes from 0.887 to 0.904 with the mirror
    image; the student, which runs once per item, learns the better average."""

    def __init__(self, teachers: list[torch.nn.Module], flip: bool) -> None:
        super().__init__()
        self.teachers, self.flip = torch.nn.ModuleList(teachers), flip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        inputs = [x, torch.flip(x, dims=[3])] if self.flip else [x]
        p = sum(torch.softmax(t(v), dim=1) for t in self.teachers for v in inputs)
        return torch.log(p / (len(self.teachers) * len(inputs)))


class _TwoSizes(torch.utils.data.Dataset):
    """Each seeded view rendered once, at the teacher's input and at the student's; with `camera`,
    the student's copy is degraded as a belt camera would (the teacher's stays clean)."""

    def __init__(self, views: SeededViews, student_pre: PreprocessConfig, camera: CameraDegradation | None = None) -> None:
        self.views, self.student_pre, self.camera = views, student_pre, camera

    def __len__(self) -> int:
        return len(self.views)

    def __getitem__(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        view = self.views.render(j)
        student_view = self.camera.apply(view, self.views.seed(j)) if self.camera is not None else view
        return to_input(view, self.views.pre), to_input(student_view, self.student_pre)


@torch.no_grad()
def _logits_and_stem_features(args: argparse.Namespace, teacher: torch.nn.Module | None, teacher_path: Path, photos: Photos, seeds: np.ndarray, policy: ViewPolicy, names: list[str], run_dir: Path, device: torch.device) -> np.ndarray | None:
    """Teacher logits (N*K, C) (None when `teacher` is None: a stem-only pass) and, written to
    args.stem_out (default run_dir/stem_features.npy), the student stem's output per view."""
    from model.config import StudentConfig
    from model.student import DistilledViT

    from .student_init import set_stem, stem_signature, student_preprocess

    cfg = StudentConfig.from_dict({**json.loads(args.student_config.read_text()), "num_classes": len(names), "stem_pretrained": False})
    student = DistilledViT(cfg)
    set_stem(student, args.stem_source, teacher_path)
    embed = student.patch_embed.eval().to(device, memory_format=torch.channels_last)  # type: ignore[union-attr]
    channels = embed.cnn.channels_after(cfg.frozen_stem_stages)  # the frozen part's output is stored
    n, k = seeds.shape
    rows, cols = cfg.grid_size
    path = args.stem_out or (run_dir / "stem_features.npy")
    tmp = path.with_name(path.stem + ".tmp.npy")
    features = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, k, channels, rows, cols))
    flat = features.reshape(n * k, channels, rows, cols)
    camera = CameraDegradation(p=args.camera_degrade) if args.camera_degrade > 0 else None
    loader = make_loader(_TwoSizes(SeededViews(photos, seeds, teacher_spec_pre(teacher_path), policy), student_preprocess(cfg), camera), args.batch_size, False, num_workers=args.workers)
    imagenet = ImageNetFeatureWriter(run_dir, cfg.stem, n, k, device) if args.imagenet_features else None
    logits, start = [], 0
    for x_t, x_s in progress(loader, "teacher + stem"):
        x_t = x_t.to(device, memory_format=torch.channels_last)
        if teacher is not None:
            logits.append(teacher(x_t).float().cpu())
        f = embed.frozen_features(x_s.to(device, memory_format=torch.channels_last)).float().cpu().numpy()
        flat[start : start + len(f)] = f.astype(np.float16)
        if imagenet is not None:
            imagenet.add(start, x_t)
        start += len(f)
    features.flush()
    del features, flat
    tmp.replace(path)
    if imagenet is not None:
        imagenet.close()
    path.with_suffix(".json").write_text(json.dumps({"student_config": cfg.to_dict(), "stem_signature": stem_signature(student), "stem_source": args.stem_source, "teacher": str(teacher_path), "shape": [n, k, channels, rows, cols], "camera_degradation": dataclasses.asdict(camera) if camera is not None else None, "paste_share": policy.p_paste}, indent=1))
    return torch.cat(logits).numpy() if teacher is not None else None


class ImageNetFeatureWriter:
    """The ImageNet-pretrained network's penultimate features (before its 1000-way head) for every
    view, at the teacher's input, into run_dir/imagenet_features.npy (N, K, D) float16: the target
    of feature distillation (training.feature_distill), which gives the student an embedding that
    knows what ImageNet knows about everyday objects, for telling unknown items apart."""

    def __init__(self, run_dir: Path, variant: str, n: int, k: int, device: torch.device) -> None:
        from model.efficientnet_lite import build_lite

        self.net = build_lite(variant, 1000, pretrained=True).eval().to(device, memory_format=torch.channels_last)
        self.path = run_dir / IMAGENET_FEATURES
        self.tmp = self.path.with_name("imagenet_features.tmp.npy")
        dim = int(self.net.num_features)
        self.array = np.lib.format.open_memmap(self.tmp, mode="w+", dtype=np.float16, shape=(n, k, dim))
        self.flat = self.array.reshape(n * k, dim)
        self.variant = variant

    @torch.no_grad()
    def add(self, start: int, x: torch.Tensor) -> None:
        f = self.net.forward_head(self.net.forward_features(x), pre_logits=True).float().cpu().numpy()
        self.flat[start : start + len(f)] = f.astype(np.float16)

    def close(self) -> None:
        self.array.flush()
        shape = list(self.array.shape)
        del self.array, self.flat
        self.tmp.replace(self.path)
        self.path.with_suffix(".json").write_text(json.dumps({"network": f"{self.variant} ImageNet (pretrained, not fine-tuned)", "shape": shape}, indent=1))


IMAGENET_FEATURES = "imagenet_features.npy"
STEM_SOURCES = ("teacher", "imagenet")  # where a student's frozen stem comes from (training.student_init.set_stem)


def teacher_spec_pre(teacher_path: Path) -> PreprocessConfig:
    """The input a teacher file says its network expects (the size the views are rendered at)."""
    return load_teacher_spec(teacher_path, torch.device("cpu"))[1].preprocess


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", type=Path, default=None, help="teacher checkpoint (default run_dir/teacher.pt)")
    p.add_argument("--views", type=int, default=8, help="K: views per training photo")
    p.add_argument("--out", type=Path, default=None, help="default run_dir/views.npz")
    p.add_argument("--paste-share", type=float, default=None,
                   help=f"share of the views that paste the cut-out item on a synthetic surface (the rest: the photo on its own board); "
                        f"stored in the cache, so every later pass renders the same views (default: {ViewPolicy().p_paste}; "
                        f"--stem-only and --merge-with take the existing cache's)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--extra-teacher", type=Path, action="append", default=[], help="another teacher file (same input and classes; another architecture is fine, e.g. efficientnet_lite1 beside lite0 at 256x192) whose prediction is averaged in; the student's stem still comes from --teacher (repeatable)")
    p.add_argument("--merge-with", type=Path, default=None, help="an existing cache of the same views (same split, --views and --seed): this pass's teacher predictions are averaged into its targets, weighted by teacher count, and the result written to --out; its stem outputs and ImageNet features stay valid. Adds a teacher to an ensemble without rerunning the others")
    p.add_argument("--flip-average", action="store_true", help="store the teacher's prediction averaged over each view and its mirror image (log probabilities) instead of its plain logits")
    p.add_argument("--stem-only", action="store_true", help="with --student-config: reuse the views and teacher logits of an existing cache (--out) and only store this student's stem outputs of those views (another input size, another stem depth)")
    p.add_argument("--stem-source", choices=STEM_SOURCES, default="teacher", help="with --student-config: the student's stem is the fine-tuned teacher's first stages (default) or the ImageNet network's, untouched (the unknown-item descriptor continues that one: model/descriptor.py)")
    p.add_argument("--camera-degrade", type=float, default=0.0, help="with --student-config: this share of the student's views (stem outputs) is degraded as a belt camera would (downscaled, JPEG quality 30-95: training.camera_degrade); the teacher's targets stay those of the clean view")
    p.add_argument("--stem-out", type=Path, default=None, help="where the stem outputs go (default run_dir/stem_features.npy; a .json record beside it)")
    p.add_argument("--imagenet-features", action="store_true", help="with --student-config: also store the ImageNet-pretrained network's penultimate features of every view (run_dir/imagenet_features.npy), the target of distill --imagenet-features")
    p.add_argument("--student-config", type=Path, default=None, help="StudentConfig JSON of a CNN-stem student: also store its stem's output (the teacher's first stages, at the student's size) for every view, in run_dir/stem_features.npy, so a frozen-stem distillation runs neither renderer nor stem")


def run(args: argparse.Namespace) -> dict[str, float]:
    if args.views < 1:
        raise ValueError(f"--views must be >= 1, got {args.views}")
    seed_everything(args.seed)
    device = resolve_device(args.device)
    run_dir: Path = args.run_dir
    names, train, _, _ = get_split(args.data, run_dir, args.val_fraction, args.seed)
    if args.stem_only:
        return _stem_only(args, names, train, run_dir, device)
    teacher_path = args.teacher or (run_dir / "teacher.pt")
    teacher, spec, t_names = load_teacher_spec(teacher_path, device)
    if t_names != names:
        raise ValueError(f"teacher classes {t_names} differ from the data's {names}")
    pre = spec.preprocess
    photos = load_photos(train, (pre.height, pre.width), mask_store_for(run_dir))
    seeds = view_seeds(len(train), args.views, args.seed)
    base = _merge_base(args, names, train, seeds, pre, args.out or (run_dir / "views.npz"))
    policy = base.policy if base is not None else view_policy(ViewPolicy().p_paste if args.paste_share is None else args.paste_share)
    timer = Timer()
    teacher = teacher.to(memory_format=torch.channels_last)
    extra = []
    for path in args.extra_teacher:
        other, other_spec, other_names = load_teacher_spec(path, device)
        if other_spec.preprocess != spec.preprocess or other_names != names:
            raise ValueError(f"--extra-teacher {path} has input {other_spec.preprocess} and classes {other_names}; --teacher has {spec.preprocess} and {names}")
        extra.append(other.to(memory_format=torch.channels_last))
    if args.flip_average or extra:
        teacher = AveragedTeacher([teacher, *extra], args.flip_average)
    if args.imagenet_features and args.student_config is None:
        raise ValueError("--imagenet-features goes with --student-config")
    if args.camera_degrade and args.student_config is None:
        raise ValueError("--camera-degrade degrades the student's stored stem inputs: it goes with --student-config")
    if args.student_config is None:
        logits, _ = predict_logits(teacher, make_loader(SeededViews(photos, seeds, pre, policy), args.batch_size, False, num_workers=args.workers), device)
        logits_np = logits.numpy()
    else:
        logits_np = _logits_and_stem_features(args, teacher, teacher_path, photos, seeds, policy, names, run_dir, device)
    assert logits_np is not None
    targets = "logits"
    if args.flip_average or extra:
        targets = f"log-probabilities averaged over {1 + len(extra)} teacher(s)" + (" and the mirror image" if args.flip_average else "")
        log.info("teacher-cache targets: %s (extra teachers: %s)", targets, [str(p) for p in args.extra_teacher])
    cache = ViewCache(seeds, logits_np.reshape(len(train), args.views, -1).astype(np.float32), names, [s.path for s in train], str(teacher_path), targets, 1 + len(extra), policy.p_paste)
    if base is not None:
        cache = merge_targets(base, cache)
        log.info("teacher-cache --merge-with %s: %s", args.merge_with, cache.targets)
    out = args.out or (run_dir / "views.npz")
    cache.save(out)
    labels = np.array([s.label for s in train])
    agree = float((cache.logits.argmax(2) == labels[:, None]).mean())
    log.info("teacher-cache: %d photos x %d views in %.0f s; teacher right on %.3f of the views", len(train), args.views, timer.elapsed(), agree)
    return {"photos": len(train), "views": args.views, "seconds": timer.elapsed(), "teacher_view_accuracy": agree, "out": str(out)}  # type: ignore[dict-item]


def _merge_base(args: argparse.Namespace, names: list[str], train: list[Sample], seeds: np.ndarray, pre: PreprocessConfig, out: Path) -> ViewCache | None:
    """The cache named by --merge-with, checked to hold exactly the views this pass renders
    (same photos, seeds and render size), so its stem outputs stay the student's input."""
    if args.merge_with is None:
        return None
    if args.student_config is not None:
        raise ValueError("--merge-with adds teacher predictions only; the merged-into cache's stem outputs stay valid, so leave out --student-config")
    if out.resolve() == args.merge_with.resolve():
        raise ValueError("--merge-with needs another --out than the cache it reads")
    base = ViewCache.load(args.merge_with)
    base.check_matches(names, [s.path for s in train])
    if base.seeds.shape != seeds.shape or not np.array_equal(base.seeds, seeds):
        raise ValueError(f"--merge-with {args.merge_with} holds other views ({base.seeds.shape[1]} per photo); use its --views and --seed")
    if args.paste_share is not None and base.paste_share != args.paste_share:
        raise ValueError(f"--merge-with {args.merge_with} renders its views with --paste-share {base.paste_share}, this pass with {args.paste_share}")
    base_pre = teacher_spec_pre(Path(base.teacher))
    if base_pre != pre:
        raise ValueError(f"--merge-with {args.merge_with}: its views were rendered at {base_pre}, this teacher's input is {pre}")
    return base


def merge_targets(base: ViewCache, new: ViewCache) -> ViewCache:
    """Average two caches' predictions of the same views as probabilities, each weighted by how
    many teachers it already averages; stored as log probabilities. The stem (and so `teacher`)
    stays the base cache's, since its stem outputs are what the student replays."""
    p_base = torch.softmax(torch.from_numpy(base.logits).double(), dim=2)
    p_new = torch.softmax(torch.from_numpy(new.logits).double(), dim=2)
    n = base.teacher_count + new.teacher_count
    p = (base.teacher_count * p_base + new.teacher_count * p_new) / n
    targets = f"log-probabilities averaged over {n} teacher(s): [{base.targets}] x{base.teacher_count} + [{new.targets} from {new.teacher}] x{new.teacher_count}"
    return ViewCache(base.seeds, torch.log(p).float().numpy(), base.class_names, base.photo_paths, base.teacher, targets, n, base.paste_share)


def _stem_only(args: argparse.Namespace, names: list[str], train: list[Sample], run_dir: Path, device: torch.device) -> dict[str, float]:
    """Stem outputs of an existing cache's views for another student config; the teacher is not run."""
    if args.student_config is None:
        raise ValueError("--stem-only needs --student-config (whose stem outputs to store)")
    if args.imagenet_features:
        raise ValueError("--stem-only stores stem outputs only; --imagenet-features needs the full pass")
    cache = ViewCache.load(args.out or (run_dir / "views.npz"))
    cache.check_matches(names, [s.path for s in train])
    teacher_path = Path(cache.teacher)
    pre = teacher_spec_pre(teacher_path)
    photos = load_photos(train, (pre.height, pre.width), mask_store_for(run_dir))
    timer = Timer()
    if args.paste_share is not None and args.paste_share != cache.paste_share:
        raise ValueError(f"--stem-only replays the views of {args.out or (run_dir / 'views.npz')}, rendered with --paste-share {cache.paste_share}; leave --paste-share out")
    _logits_and_stem_features(args, None, teacher_path, photos, cache.seeds, cache.policy, names, run_dir, device)
    log.info("teacher-cache --stem-only: %d photos x %d views in %.0f s", len(train), cache.seeds.shape[1], timer.elapsed())
    return {"photos": len(train), "views": int(cache.seeds.shape[1]), "seconds": timer.elapsed()}
