"""The sweep's world and sample builds, made once and cached on disk.

    SWEEP/world/                    the generated world (``data.generate``), or ``data.path``
    SWEEP/samples/<key>/            one sample build per distinct data-changing setting
                                    (:func:`~rliv_ray.sweep.space.data_key`)

Each build is written atomically by its builder (``OUT.tmp-<pid>`` renamed at the end), so an
existing directory is a complete build and is reused, by a later trial or a resumed sweep.
Everything runs in the driver before Tune starts: a bad setting (more groups than the users
with watch time, say) fails at once with one line, and trials never race to build.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from rliv_ray.data import io
from rliv_ray.sweep.config import SweepConfig, check_groups
from rliv_ray.sweep.space import data_key, data_points

WORLD_DIR = "world"
SAMPLES_DIR = "samples"


def prepare_world(config: SweepConfig, out: Path, say: Callable[[str], None] = print) -> Path:
    """The world's directory: ``data.path`` checked, or generated under ``out/world``."""
    if config.data.path:
        world = Path(config.data.path).resolve()
        manifest = io.read_manifest(world)
        if "world" not in manifest:
            raise ValueError(f"data.path {world}: not a `rliv generate{'-live' * _live(config)}`"
                             " output (its manifest names no world)")
    else:
        world = out / WORLD_DIR
        if not world.exists():
            say(f"generating the world ({_world_text(config)}) in {world}")
            _generate(config, world)
        manifest = io.read_manifest(world)
    if _live(config) != (manifest.get("source") == _live_source()):
        wanted = "generate-live" if _live(config) else "generate"
        raise ValueError(f"{world}: a {config.algorithm} sweep needs a `rliv {wanted}` world")
    if _live(config):
        check_groups(config, int(manifest["users"]))
    return world


def prepare_samples(config: SweepConfig, world: Path, out: Path,
                    say: Callable[[str], None] = print) -> dict[str, str]:
    """Build (or reuse) every sample build of the search space: data key -> directory."""
    builds = {}
    for settings in data_points(config):
        key = data_key(settings)
        path = out / SAMPLES_DIR / key
        if path.exists():
            say(f"samples {key}: cached")
        else:
            say(f"samples {key}: building")
            _build(config.algorithm, world, path, settings)
        builds[key] = str(path.resolve())
    return builds


def _live(config: SweepConfig) -> bool:
    return config.algorithm == "sl-mgac"


def _live_source() -> str:
    from rliv_ray.data.live_generate import SOURCE

    return SOURCE


def _world_text(config: SweepConfig) -> str:
    g = config.data.generate
    return ", ".join(f"{k} {v}" for k, v in g.items() if k != "set") or "defaults"


def world_fields(generate: dict[str, Any]) -> dict[str, Any]:
    """World config fields from ``data.generate`` (users, days, seed and ``set``)."""
    fields = dict(generate.get("set") or {})
    for name, field in (("users", "n_users"), ("days", "days"), ("seed", "seed")):
        if name in generate:
            fields[field] = generate[name]
    return fields


def _generate(config: SweepConfig, world: Path) -> None:
    fields = world_fields(config.data.generate)
    try:
        if _live(config):
            from rliv_ray.data.live_config import LiveWorldConfig
            from rliv_ray.data.live_generate import generate_live_world

            generate_live_world(world, LiveWorldConfig.from_dict(fields), progress=False)
        else:
            from rliv_ray.data.ua_config import UAWorldConfig
            from rliv_ray.data.ua_generate import generate_ua_world

            generate_ua_world(world, UAWorldConfig.from_dict(fields), progress=False)
    except TypeError as err:  # an unknown world field
        raise ValueError(f"data.generate: {err}") from err


def _build(algorithm: str, world: Path, path: Path, settings: dict[str, Any]) -> None:
    settings = {k: v for k, v in settings.items() if k != "world"}
    if algorithm == "sl-mgac":
        from rliv_ray.data.live_build import build_live_samples

        build_live_samples(world, path, progress=False, **settings)
        return
    from rliv_ray.mdp.asa import ASAConfig
    from rliv_ray.mdp.pipeline import build_samples, sample_path
    from rliv_ray.mdp.samples import SampleConfig
    from rliv_ray.mdp.stitching import StitchConfig

    length = settings.get("sequence_length") or io.read_manifest(world)["world"].get(
        "sequence_length", 30)
    stitch = StitchConfig(sequence_length=length, content=settings.get("content", "exposures"),
                          window_ms=settings.get("window_ms", 2_000))
    asa = ASAConfig(epochs=settings.get("asa_epochs", 10), seed=settings.get("seed", 0),
                    max_train_tuples=settings.get("max_train_tuples", 1_000_000))
    sample = SampleConfig(stitch=stitch, mode=settings.get("mode", "asa"))
    files = len(io.log_files(world))
    build_samples(world, path, config=sample, asa_config=asa, progress=False,
                  workers=sample_path(0, address=None, files=files))


def samples_for(builds: dict[str, str], config: SweepConfig, point: dict[str, Any]) -> str:
    """The sample build of a trial's point."""
    from rliv_ray.sweep.space import data_settings

    return builds[data_key(data_settings(config, point))]
