"""`curate`: HICom-248K curation (score, select, generate instruction-description pairs)."""
from pathlib import Path

from hicom.core.errors import ConfigError

NAME = "curate"
HELP = "HICom-248K curation: score, select, generate instruction-description pairs"
TRACKED = False


def add_arguments(parser) -> None:
    parser.add_argument("--profile", default=None)
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--world", help="a synthetic world directory (candidates = its training clips)")
    src.add_argument("--pool", help="a LLaVA JSON/JSONL of candidate videos (paths relative to its folder)")
    parser.add_argument("--towers", default=None, help="SigLIP directory (default: the profile's vision path)")
    parser.add_argument("--out", required=True)


def run(args, params) -> int:
    from transformers import SiglipTextModel, SiglipVisionModel

    from hicom.curate.curation import GroundTruthGenerator, OpenAIGenerator, run_curation
    from hicom.data.tokenizer import load_tokenizer
    from hicom.data.video import FramePreprocessor
    from hicom.model.build import quiet_transformers

    profile = params.profile(args.profile)
    cfg = params.curate
    towers = Path(args.towers or profile.vision.path or "")
    if not towers.is_dir():
        raise ConfigError(f"curate: SigLIP towers directory {str(towers)!r} not found (pass --towers DIR)")
    if args.world:
        from hicom.data.synthetic import read_world

        world = Path(args.world)
        scenes, test_ids = read_world(world)
        videos = [{"id": s.id, "video": str(world / "videos" / f"{s.id}.mp4")} for s in scenes if s.id not in test_ids]
        data_root = world
    else:
        from hicom.data.mixture import read_annotations

        pool = Path(args.pool)
        data_root = pool.parent
        videos = [{"id": str(s.get("id", i)), "video": str(data_root / s["video"])}
                  for i, s in enumerate(read_annotations(pool)) if "video" in s]
    if cfg.generator == "groundtruth":
        if not args.world:
            raise ConfigError("curate: the groundtruth generator needs --world (synthetic scenes)")
        generator = GroundTruthGenerator(Path(args.world) / "scenes.jsonl", cfg.pairs_per_video, cfg.seed)
    else:
        generator = OpenAIGenerator(cfg.openai, cfg.pairs_per_video, Path(args.out) / "cache", cfg.decoder)
    with quiet_transformers():
        vision = SiglipVisionModel.from_pretrained(towers).eval()
        text = SiglipTextModel.from_pretrained(towers).eval()
    manifest = run_curation(videos, cfg, args.out, vision, text, load_tokenizer(towers),
                            FramePreprocessor.from_pretrained(towers), generator, data_root,
                            text.config.max_position_embeddings)
    print(f"curate: {manifest['candidates']} candidates, {manifest['selected']} selected, {manifest['written']} "
          f"written ({manifest['pairs']} pairs), {manifest['rejects']} rejected; per category: "
          f"{manifest['per_category']}")
    return 0
