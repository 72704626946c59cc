"""Where a trained tiny model loses the answer: the LLM's use of the video, the compressed tokens, the towers.

    python bench/capacity_probe.py [--outputs outputs] [--train-clips 240] [--questions 400] [--tables events]

Run after `make run`. Per question family of the synthetic test (each family's chance beside it):

    model          option likelihood accuracy, the pipeline's protocol (bare question, scored answers)
    other clip     the same questions asked about another test clip: what the text alone gets
    same answer    share of questions whose chosen option is the same with the other clip: 1.00, the video
                   changes nothing
    in-clip pick   a uniform pick among the options whose value the clip holds (the answer and the other objects'
                   values): what knowing the scene's values gets without binding them or placing them in time,
                   the floor a binding family has to beat (its chance of 1/4 is lower)
    tokens+q       a linear probe (logistic regression, trained on training clips' questions, scored on the test
                   clips') from the compressed visual tokens made with the question's instruction, plus the
                   question text one-hot: can the answer be read from what the LLM is given?
    tokens,no q    the same from the tokens compressed without the instruction (the unconditional path)
    local/global   tokens+q from the local or the global level only

A family whose `tokens+q` is high but `model` is low is lost in the LLM; one whose probes sit at the
majority answer is lost before it (compressor or towers).

A second table asks the towers: per object visible in a clip's first two sampled frames, a linear probe of its
colour, shape and size (trained on training clips' objects, scored on the test clips') from

    pooled         the penultimate patch features over the patches the object covers, averaged and max-pooled:
                   what a compressor that pools patches (both HICom levels do) can keep
    3x3            the 3x3 patches around its centre, concatenated: what the features hold in their layout
    pixels ...     the same two from the raw pixels of those patches: what the frames themselves give

and the share of the patch features' norm that is one component common to the whole clip. A probe classifies among every value of the
answer (6 colours, 4 shapes, 5 motions, 9 cells), so its floor is the majority answer, not 1/4.
The model's accuracy carries the 95% cluster-bootstrap interval over clips, as in results.json; each probe's
test count is printed beside it (`probe n`).

A third table asks whether `event_colour` (the colour of the object that appears late or leaves early) reaches
the LLM frame by frame. Per colour, a linear probe reads "an object of this colour is in view" from each sampled
frame's local tokens, compressed with the clip's event question as instruction (`guided`) or without one
(`plain`). The question's rule is then applied to the probabilities: of the clip's colours, the one whose
presence rises most from the first-half frames to the second-half frames (falls most, for "leaves early").
Its accuracy against the share a uniform pick among the clip's colours gets says whether the cross-frame
difference can be read from what the LLM is given; the model's own `event_colour` accuracy is in the first table.
A last line gives in how many sampled frames the colour the model picks is in view, against the answer's: a model
that weighs a colour by how long it is seen leans to the wrong colours for this question.

A fourth table (`fit`) asks whether the model fits its own training data. It asks the training clips the held-out
test's kinds of questions (up to two a family a clip) and splits them by whether the question was one of that clip's
instruction-tuning turns (`tuned`: the model saw it with its answer every epoch) or not (`not tuned`). A family
near 1.0 when tuned and lower when not is memorised more than learned; one low even when tuned is not fitted at
all, so more data or epochs of the same kind will not lift it.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from sklearn.linear_model import LogisticRegression

from hicom.core.errors import DataError
from hicom.core.files import iter_jsonl
from hicom.core.stats import cluster_bootstrap
from hicom.core.types import VisualItem
from hicom.data.conversation import tokenise_guides
from hicom.data.synthetic import LETTERS, held_out_questions, in_clip_options, read_world
from hicom.data.synthetic.scenes import object_radius
from hicom.data.tokenizer import load_tokenizer
from hicom.data.video import FramePreprocessor, read_video
from hicom.evaluate.benchmarks import read_benchmark
from hicom.evaluate.mcq import Job, Variant, likeliest_letter, option_scores
from hicom.evaluate.settings import EvalConfig
from hicom.model.modeling_hicom import HIComForCausalLM


class Probe:
    def __init__(self, outputs: Path, frames: int):
        self.outputs = outputs
        model_dir = outputs / "train/sft/model"
        self.model = HIComForCausalLM.from_pretrained(model_dir).eval()
        self.tokenizer = load_tokenizer(model_dir)
        self.guide_tokenizer = load_tokenizer(outputs / "towers")
        size = self.model.config.vision_config.image_size
        self.preprocessor = FramePreprocessor.from_towers(outputs / "towers", size)
        self.frames = frames
        self._features: dict[Path, tuple] = {}

    @property
    def global_queries(self) -> int:
        """The global level's token count (0 without one): the last tokens of a compressed clip."""
        projector = self.model.projector
        return projector.cfg.global_.num_queries if projector.global_compressor else 0

    def features(self, video: Path) -> tuple:
        if video not in self._features:
            clip = read_video(video, self.frames)
            self._features[video] = self.model.encode_frames(self.preprocessor(clip.frames), with_embeds=True)
        return self._features[video]

    def tokens(self, video: Path, questions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(k, N, D) tokens compressed with each question's instruction, and (N, D) without one."""
        features, embeds = self.features(video)
        projector = self.model.projector
        embeds = embeds if projector.needs_embeds else None
        ids = tokenise_guides(self.guide_tokenizer, questions, self.model.config.guide_max_length)
        guide = self.model._item_guides([VisualItem(None, "video", ids, features=features, embeds=embeds)], [ids])[0]
        guided = projector(features, embeds, guide)
        projector.guided = False
        try:
            plain = projector(features, embeds, None)
        finally:
            projector.guided = True
        return guided.numpy(), plain.numpy()


def model_accuracy(probe: Probe, samples, other: bool) -> dict[str, list[tuple[bool, str, str]]]:
    job = Job(benchmark="synthetic", samples=samples, out=Path("."), frames=probe.frames, decoder="decord",
              config=EvalConfig(), model_version="probe")
    variant = Variant(protocol="likelihood")
    videos = sorted({s.video for s in samples})
    out = collections.defaultdict(list)
    for s in samples:
        video = videos[(videos.index(s.video) + 1) % len(videos)] if other else s.video
        features, embeds = probe.features(video)
        scores = option_scores(probe.model, [s], [job.prompt(s, variant)], probe.tokenizer, probe.guide_tokenizer,
                               features, embeds if probe.model.projector.needs_embeds else None, torch.device("cpu"))[0]
        letter = likeliest_letter(scores)
        out[s.groups["family"]].append((letter == s.answer, str(s.video), letter))
    return out


def probe_rows(probe: Probe, scenes, world: Path) -> list[dict]:
    rows = []
    for scene in scenes:
        questions = held_out_questions(scene, random.Random(scene.id), 3)
        if not questions:
            continue
        guided, plain = probe.tokens(world / "videos" / f"{scene.id}.mp4", [q["question"] for q in questions])
        for q, tokens in zip(questions, guided):
            rows.append({"family": q["family"], "question": q["question"],
                         "answer": q["options"][LETTERS.index(q["answer"])], "guided": tokens, "plain": plain})
    return rows


def linear_probe(train: list[dict], test: list[dict], view, questions: list[str]) -> float:
    index = {q: i for i, q in enumerate(questions)}

    def design(rows):
        onehot = np.zeros((len(rows), len(questions)), dtype=np.float32)
        for i, r in enumerate(rows):
            onehot[i, index[r["question"]]] = 1
        return np.concatenate([np.stack([view(r).ravel() for r in rows]), onehot], axis=1)

    labels = [r["answer"] for r in train]
    if len(set(labels)) < 2:
        return float("nan")
    clf = LogisticRegression(max_iter=500, C=0.1).fit(design(train), labels)
    return float(clf.score(design(test), [r["answer"] for r in test]))


def object_rows(probe: Probe, scenes, world: Path) -> list[dict]:
    """One row per object visible in a clip's first two sampled frames: its attributes and the four views."""
    rows = []
    for scene in scenes:
        video = world / "videos" / f"{scene.id}.mp4"
        clip = read_video(video, probe.frames)
        features = probe.features(video)[0]  # (frames, g, g, C): what the compressor is given
        g = features.shape[1]
        pixels = rearrange(probe.preprocessor(clip.frames), "f c (h a) (w b) -> f h w (c a b)", h=g, w=g)
        for i, t in enumerate(clip.indices[:2]):
            for obj in (o for o in scene.objects if o.visible(t)):
                x, y = obj.position(t)
                r = object_radius(obj.size, scene.size)
                covered = sorted({(min(g - 1, max(0, v * g // scene.size)), min(g - 1, max(0, u * g // scene.size)))
                                  for u in range(x - r, x + r + 1) for v in range(y - r, y + r + 1)})
                cy, cx = (min(g - 2, max(1, c * g // scene.size)) for c in (y, x))
                row = {"colour": obj.colour, "shape": obj.shape, "size": obj.size}
                for name, grid in (("features", features[i]), ("pixels", pixels[i])):
                    patches = torch.stack([grid[a, b] for a, b in covered]).float()
                    row[f"{name} pooled"] = torch.cat([patches.mean(0), patches.amax(0)]).numpy()
                    row[f"{name} 3x3"] = grid[cy - 1:cy + 2, cx - 1:cx + 2].reshape(-1).float().numpy()
                rows.append(row)
    return rows


def object_probe(train: list[dict], test: list[dict], attribute: str, view: str) -> float:
    x_train, x_test = np.stack([r[view] for r in train]), np.stack([r[view] for r in test])
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    clf = LogisticRegression(max_iter=2000, C=0.5).fit((x_train - mean) / std, [r[attribute] for r in train])
    return float(clf.score((x_test - mean) / std, [r[attribute] for r in test]))


def common_share(probe: Probe, videos: list[Path]) -> float:
    """Norm of the clip's mean patch feature over the patches' mean norm: near 1, the patches differ little."""
    shares = []
    for video in videos:
        f = probe.features(video)[0]
        f = f.reshape(-1, f.shape[-1]).float()
        shares.append((f.mean(0).norm() / f.norm(dim=-1).mean()).item())
    return float(np.mean(shares))


def towers_table(probe: Probe, train_scenes, test_scenes, world: Path) -> None:
    train, test = object_rows(probe, train_scenes, world), object_rows(probe, test_scenes, world)
    views = ("features pooled", "features 3x3", "pixels pooled", "pixels 3x3")
    header = ["attribute", "majority", *views, "probe n"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for attribute in ("colour", "shape", "size"):
        majority = collections.Counter(r[attribute] for r in train).most_common(1)[0][0]
        floor = np.mean([r[attribute] == majority for r in test])
        scores = [object_probe(train, test, attribute, view) for view in views]
        print(f"| {attribute} | {floor:.2f} | " + " | ".join(f"{x:.2f}" for x in scores) + f" | {len(test)} |")
    share = common_share(probe, [world / "videos" / f"{s.id}.mp4" for s in test_scenes[:20]])
    print(f"\npatch features: the component common to a clip is {share:.2f} of a patch's norm (20 test clips)")


def _with_interval(values, videos) -> str:
    """The mean and its 95% cluster-bootstrap interval over clips, as results.json gives them."""
    bounds = cluster_bootstrap(values, videos)
    return f"{np.mean(values):.2f} [{bounds[0]:.2f}, {bounds[1]:.2f}]" if bounds else f"{np.mean(values):.2f}"


def families_table(probe: Probe, world: Path, questions: int, train_scenes, test_scenes) -> None:
    samples = read_benchmark("synthetic", world / "mcq_test.jsonl")[:questions]
    scenes = {s.id: s for s in test_scenes}
    in_clip = collections.defaultdict(list)
    for s in samples:
        flags = in_clip_options(scenes[Path(s.video).stem], s.question, s.options)
        in_clip[s.groups["family"]].append((1 / sum(flags), str(s.video)))
    own, other = model_accuracy(probe, samples, False), model_accuracy(probe, samples, True)
    train_rows, test_rows = probe_rows(probe, train_scenes, world), probe_rows(probe, test_scenes, world)
    queries = probe.global_queries
    views = {"tokens+q": lambda r: r["guided"], "tokens,no q": lambda r: r["plain"],
             "local+q": lambda r: r["guided"][:-queries] if queries else r["guided"],
             "global+q": lambda r: r["guided"][-queries:] if queries else r["guided"][:0]}
    header = ["family", "chance", "in-clip pick [95% CI]", "model [95% CI]", "other clip", "same answer", *views,
              "probe majority", "probe n"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for family in sorted(own):
        hits = [h for h, _, _ in own[family]]
        same = np.mean([a[2] == b[2] for a, b in zip(own[family], other[family])])
        model = _with_interval(hits, [v for _, v, _ in own[family]])
        tr = [r for r in train_rows if r["family"] == family]
        te = [r for r in test_rows if r["family"] == family]
        questions = sorted({r["question"] for r in tr + te})
        scores = [linear_probe(tr, te, view, questions) for view in views.values()]
        majority = collections.Counter(r["answer"] for r in tr).most_common(1)[0][0] if tr else None
        floor = np.mean([r["answer"] == majority for r in te]) if te else float("nan")
        chance = np.mean([1 / len(s.options) for s in samples if s.groups["family"] == family])
        print(f"| {family} | {chance:.2f} | {_with_interval(*zip(*in_clip[family]))} | {model} | "
              f"{np.mean([h for h, _, _ in other[family]]):.2f} | {same:.2f} | "
              + " | ".join(f"{x:.2f}" for x in scores) + f" | {floor:.2f} | {len(te)} |")


def frame_rows(probe: Probe, scenes, world: Path) -> list[dict]:
    """One row per clip with an event_colour question: its local tokens per sampled frame and what is in view."""
    rows = []
    queries = probe.global_queries
    for scene in scenes:
        for q in (q for q in held_out_questions(scene, random.Random(scene.id), 2) if q["family"] == "event_colour"):
            video = world / "videos" / f"{scene.id}.mp4"
            indices = read_video(video, probe.frames).indices
            guided, plain = probe.tokens(video, [q["question"]])
            local = {"guided": guided[0][:len(guided[0]) - queries], "plain": plain[:len(plain) - queries]}
            if len(local["plain"]) != len(indices):
                raise SystemExit(f"capacity_probe: the event table needs one local token a frame "
                                 f"(temporal_kernel 1, spatial_kernel = the patch grid); got {len(local['plain'])} "
                                 f"tokens for {len(indices)} frames")
            in_view = [{o.colour for o in scene.objects if o.visible(t)} for t in indices]
            rows.append({"late": q["target"] == "the second half of the video", "in_view": in_view,
                         "colours": sorted({o.colour for o in scene.objects}),
                         "answer": q["options"][LETTERS.index(q["answer"])], **local})
    return rows


def event_table(probe: Probe, train_scenes, test_scenes, world: Path) -> None:
    train, test = frame_rows(probe, train_scenes, world), frame_rows(probe, test_scenes, world)
    colours = sorted({c for r in train for c in r["colours"]})
    half = probe.frames // 2
    chance = np.mean([1 / len(r["colours"]) for r in test])
    print("\n| event_colour from per-frame tokens | presence probe accuracy (majority) | rule right | rule chance | n |"
          "\n|---|---|---|---|---|")
    for view in ("guided", "plain"):
        x_train = np.concatenate([r[view] for r in train])
        mean, std = x_train.mean(0), x_train.std(0) + 1e-6
        presence, accuracy, floor = {}, [], []
        for colour in colours:
            y_train = [colour in seen for r in train for seen in r["in_view"]]
            y_test = [colour in seen for r in test for seen in r["in_view"]]
            clf = LogisticRegression(max_iter=2000, C=0.5).fit((x_train - mean) / std, y_train)
            x_test = (np.concatenate([r[view] for r in test]) - mean) / std
            accuracy.append(clf.score(x_test, y_test))
            floor.append(max(np.mean(y_test), 1 - np.mean(y_test)))
            presence[colour] = clf.predict_proba(x_test)[:, 1].reshape(len(test), -1)
        print(f"| {view} local tokens | {np.mean(accuracy):.2f} ({np.mean(floor):.2f}) | "
              f"{_rule_accuracy(test, presence, half):.2f} | {chance:.2f} | {len(test)} |")
    truth = {c: np.array([[c in seen for seen in r["in_view"]] for r in test], dtype=float) for c in colours}
    print(f"| what is in view (the rule's ceiling) | 1.00 | {_rule_accuracy(test, truth, half):.2f} | {chance:.2f} | "
          f"{len(test)} |")
    samples = [s for s in read_benchmark("synthetic", world / "mcq_test.jsonl") if s.groups["family"] == "event_colour"]
    scenes = {s.id: s for s in test_scenes}
    picked, answer, shown = [], [], []
    for s, (_, _, letter) in zip(samples, model_accuracy(probe, samples, False)["event_colour"]):
        scene, indices = scenes[Path(s.video).stem], read_video(s.video, probe.frames).indices
        frames = [sum(any(o.colour == c and o.visible(t) for o in scene.objects) for t in indices) for c in s.options]
        picked.append(frames[LETTERS.index(letter)])
        answer.append(frames[LETTERS.index(s.answer)])
        shown.append(any(o.colour == s.options[LETTERS.index(letter)] for o in scene.objects))
    print(f"\nthe model's event_colour pick is a colour the clip shows in {np.mean(shown):.2f} of {len(samples)} "
          f"questions, in view in {np.mean(picked):.1f} of {probe.frames} sampled frames on average, the answer in "
          f"{np.mean(answer):.1f}")


def _rule_accuracy(rows: list[dict], presence: dict[str, np.ndarray], half: int) -> float:
    """The event rule on per-frame presence (rows x frames per colour): ties share the credit."""
    right = []
    for i, r in enumerate(rows):
        rise = {c: presence[c][i][half:].mean() - presence[c][i][:half].mean() for c in r["colours"]}
        best = max(rise.values()) if r["late"] else min(rise.values())
        winners = [c for c in r["colours"] if rise[c] == best]
        right.append((r["answer"] in winners) / len(winners))
    return float(np.mean(right))


def fit_table(probe: Probe, world: Path, train_scenes) -> None:
    tuned = {record["id"]: {turn["value"].split("\n")[-1] for turn in record["conversations"]
                            if turn["from"] == "human"}
             for _, record in iter_jsonl(world / "sft.jsonl", DataError)}
    records = []
    for scene in train_scenes:
        for i, q in enumerate(held_out_questions(scene, random.Random(f"fit:{scene.id}"), per_family=2)):
            records.append({"id": f"{scene.id}_fit{i}", "video": f"videos/{scene.id}.mp4", **q,
                            "tuned": q["question"] in tuned.get(scene.id, ())})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fit.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        samples = read_benchmark("synthetic", path, videos=world)
    was_tuned = {r["id"]: r["tuned"] for r in records}
    split = collections.defaultdict(lambda: ([], []))
    for family, rows in model_accuracy(probe, samples, False).items():
        for sample, (hit, video, _) in zip([s for s in samples if s.groups["family"] == family], rows):
            split[family, was_tuned[sample.id]][0].append(hit)
            split[family, was_tuned[sample.id]][1].append(video)
    print(f"\nFit on the first {len(train_scenes)} training clips (model accuracy [95% CI], n)\n")
    print("| family | tuned | not tuned |\n|---|---|---|")
    for family in sorted({f for f, _ in split}):
        cells = [f"{_with_interval(*split[family, flag])}, {len(split[family, flag][0])}"
                 if split[family, flag][0] else "-" for flag in (True, False)]
        print(f"| {family} | " + " | ".join(cells) + " |")


TABLES = ("families", "towers", "events", "fit")
DEFAULT_TABLES = TABLES[:3]  # fit asks the training clips too: a slower table, on request


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outputs", type=Path, default=Path("outputs"))
    parser.add_argument("--train-clips", type=int, default=240)
    parser.add_argument("--questions", type=int, default=400, help="test questions the model is scored on")
    parser.add_argument("--frames", type=int, default=8, help="frames per clip (the profile's num_frames)")
    parser.add_argument("--tables", default=",".join(DEFAULT_TABLES),
                        help=f"which tables to print, comma-separated: {', '.join(TABLES)}")
    args = parser.parse_args()
    tables = set(args.tables.split(","))
    if tables - set(TABLES):  # an empty --tables gives {""}, refused here too
        parser.error(f"--tables: expected some of {', '.join(TABLES)}; got {args.tables!r}")
    torch.set_num_threads(1)
    world = args.outputs / "world"
    if not (args.outputs / "train/sft/model/config.json").is_file():
        print(f"capacity_probe: no trained model in {args.outputs}/train/sft/model; run `make run` first",
              file=sys.stderr)
        return 2
    probe = Probe(args.outputs, args.frames)
    torch.set_grad_enabled(False)
    scenes, test_ids = read_world(world)
    train_scenes = [s for s in scenes if s.id not in test_ids][:args.train_clips]
    test_scenes = [s for s in scenes if s.id in test_ids]
    if "families" in tables:
        families_table(probe, world, args.questions, train_scenes, test_scenes)
    if "towers" in tables:
        towers_table(probe, train_scenes, test_scenes, world)
    if "events" in tables:
        event_table(probe, train_scenes, test_scenes, world)
    if "fit" in tables:
        fit_table(probe, world, train_scenes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
