"""The RAM decoding checked against what the emulator draws and counts, over a real episode.

One seeded game (random directions held 12 steps each, about 700 steps to game over, ~2 s) in
which Ms. Pac-Man eats a power pill, eats a ghost and loses every life. Each check compares a
decoded quantity with something measured another way: sprite colours on the rendered frame,
ALE's lives and rewards, the power pill's pixels, the direction of motion.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rlsae.agents.config import EnvConfig, RecordConfig
from rlsae.agents.envs import AleVecEnv, rgb_frame
from rlsae.agents.ram import (
    FRUITS,
    GAMES_WITH_RAM_TABLE,
    MAZE_ITEMS,
    MAZE_TUNNELS,
    MSPACMAN_RAM,
    PIXEL_OFFSET_X,
    PIXEL_OFFSET_Y,
    POWER_PILL_XY,
    RAM_CACHE,
    TUNNEL_DEPTH,
    RamRollout,
    decode_ram,
    decode_ram_batch,
    has_recorded_ram,
    ram_decoder,
    recorded_ram,
    recording_ram,
    replay_ram,
    rollout_ram,
)
from rlsae.agents.results import EpisodeLog, RecordedEpisode
from rlsae.errors import RlsaeError

PLAYER_RGB = (210, 164, 74)  # OCAtari's colour of Ms. Pac-Man
GHOST_RGB = [(180, 122, 48), (84, 184, 153), (198, 89, 179), (200, 72, 72)]  # OCAtari vision
EDIBLE_RGB = (66, 114, 194)  # OCAtari vision: "eatable"
PILL_RGB = (228, 111, 111)  # OCAtari: pills and power pills
MAZE_ROWS = 172  # the maze; below are the lives and score


@pytest.fixture(scope="module")
def game() -> RamRollout:
    rng = np.random.default_rng(0)
    actions = np.repeat(rng.integers(1, 5, size=100), 12)  # UP/RIGHT/LEFT/DOWN held 12 steps
    run = rollout_ram(actions, seed=0, frames=True)
    assert run.frames is not None
    assert 400 < len(run.actions) < len(actions), "the seeded game ends (game over)"
    assert len(run.ram) == len(run.frames) == len(run.lives) == len(run.actions) + 1
    return run


def _bbox_centres(frames: np.ndarray, rgb: tuple[int, int, int]) -> tuple[np.ndarray, ...]:
    """Per frame the centre of the bounding box of ``rgb`` in the maze (NaN when absent or
    split across the screen edge)."""
    n = len(frames)
    cx, cy = np.full(n, np.nan), np.full(n, np.nan)
    for t in range(n):
        ys, xs = np.nonzero(np.all(frames[t, :MAZE_ROWS] == rgb, axis=-1))
        if len(xs) and xs.max() - xs.min() <= 12 and ys.max() - ys.min() <= 12:
            cx[t], cy[t] = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
    return cx, cy


def test_player_position_matches_sprite_with_the_fitted_offset(game: RamRollout) -> None:
    assert game.frames is not None
    cx, cy = _bbox_centres(game.frames, PLAYER_RGB)
    seen = ~np.isnan(cx)
    assert seen.mean() > 0.9  # Ms. Pac-Man is drawn in almost every frame
    raw_x, raw_y = game.ram[seen, 10].astype(float), game.ram[seen, 16].astype(float)
    # the offset fitted on these frames is the one the decoder uses
    assert np.median(cx[seen] - raw_x) == pytest.approx(PIXEL_OFFSET_X, abs=0.5)
    assert np.median(cy[seen] - raw_y) == pytest.approx(PIXEL_OFFSET_Y, abs=0.5)
    s = decode_ram_batch(game.ram)
    err = np.maximum(np.abs(s.player_x[seen] - cx[seen]), np.abs(s.player_y[seen] - cy[seen]))
    assert np.mean(err <= 1.0) >= 0.99
    # a decoder one step late would miss: the check can fail
    late = np.maximum(np.abs(s.player_x[:-1] - cx[1:]), np.abs(s.player_y[:-1] - cy[1:]))
    assert np.nanmean(late <= 1.0) < 0.9


def test_ghost_positions_match_their_colours(game: RamRollout) -> None:
    assert game.frames is not None
    s = decode_ram_batch(game.ram)
    for g, rgb in enumerate(GHOST_RGB):
        cx, cy = _bbox_centres(game.frames, rgb)
        seen = ~np.isnan(cx) & ~s.ghost_edible[:, g]
        assert seen.sum() > 200, g  # ghosts flicker, but each is drawn often
        err = np.maximum(
            np.abs(s.ghost_x[seen, g] - cx[seen]), np.abs(s.ghost_y[seen, g] - cy[seen])
        )
        assert np.mean(err <= 2.5) >= 0.95, (g, np.mean(err <= 2.5))


def _colour_near(frame: np.ndarray, x: float, y: float, rgb: tuple[int, int, int]) -> int:
    x0, y0 = int(round(x)), int(round(y))
    patch = frame[max(0, y0 - 7) : min(MAZE_ROWS, y0 + 8), max(0, x0 - 7) : x0 + 8]
    return int(np.all(patch == rgb, axis=-1).sum())


def test_edible_flag_matches_blue_ghosts(game: RamRollout) -> None:
    assert game.frames is not None
    s = decode_ram_batch(game.ram)
    for g, rgb in enumerate(GHOST_RGB):
        blue = np.array([
            _colour_near(f, s.ghost_x[t, g], s.ghost_y[t, g], EDIBLE_RGB) > 5
            for t, f in enumerate(game.frames)
        ])  # fmt: skip
        own = np.array([
            _colour_near(f, s.ghost_x[t, g], s.ghost_y[t, g], rgb) > 5
            for t, f in enumerate(game.frames)
        ])  # fmt: skip
        drawn = blue | own
        assert blue.sum() >= 40 and (own & ~blue).sum() >= 100, g  # both kinds occur
        assert np.mean(s.ghost_edible[drawn, g] == blue[drawn]) >= 0.98, g


def test_eyes_flag_matches_the_shrunken_sprite(game: RamRollout) -> None:
    """An eaten ghost is drawn as eyes: <= 16 pixels of its colour instead of ~56."""
    assert game.frames is not None
    s = decode_ram_batch(game.ram)
    for g, rgb in enumerate(GHOST_RGB):
        px = np.array([
            _colour_near(f, s.ghost_x[t, g], s.ghost_y[t, g], rgb)
            for t, f in enumerate(game.frames)
        ])  # fmt: skip
        drawn = px > 0
        small = px <= 20
        if g == 0:  # the orange ghost is eaten in this game
            assert (s.ghost_eyes[drawn, g] & small[drawn]).sum() >= 30
        assert np.mean(s.ghost_eyes[drawn, g] == small[drawn]) >= 0.97, g


def test_lives_score_and_eaten_ghost(game: RamRollout) -> None:
    s = decode_ram_batch(game.ram)
    # ALE's own count (which reads 0 once the game is over, at the last step)
    np.testing.assert_array_equal(s.lives[:-1], game.lives[:-1])
    assert game.lives[-1] == 0
    assert list(np.unique(s.lives)) == [1, 2, 3] and np.all(np.diff(s.lives) <= 0)
    # the decoded score moves exactly by ALE's reward
    np.testing.assert_array_equal(np.diff(s.score), game.rewards)
    assert s.score[-1] > 500
    assert np.any(np.diff(s.score) == 200)  # a ghost was eaten (the first is worth 200)
    eaten = int(np.flatnonzero(np.diff(s.score) == 200)[0]) + 1
    assert s.ghost_edible[eaten - 1].sum() > s.ghost_edible[eaten].sum()  # it stopped being blue
    assert (s.ghost_eyes[eaten] & ~s.ghost_eyes[eaten - 1]).any()  # only its eyes are left


def _pill_pixels(frames: np.ndarray, x: float, y: float) -> np.ndarray:
    """Per frame, the pixels of pill colour in the 4x7 power-pill box centred on (x, y)."""
    x0, y0 = int(x - 2), int(y - 3.5)
    return np.all(frames[:, y0 : y0 + 7, x0 : x0 + 4] == PILL_RGB, axis=-1).sum(axis=(1, 2))


def test_power_pills_and_dots(game: RamRollout) -> None:
    assert game.frames is not None
    s = decode_ram_batch(game.ram)
    left = s.power_pills_left
    assert left[0] == 4 and left[-1] == 3 and np.all(np.diff(left) <= 0)
    gone = int(np.flatnonzero(~s.power_pills[-1])[0])
    t_gone = int(np.flatnonzero(np.diff(left))[0]) + 1
    pixels = _pill_pixels(game.frames, *POWER_PILL_XY[gone])
    # drawn (blinking: the whole 4x7 box or nothing) until eaten, then never again
    assert pixels[:t_gone].max() == 28 and pixels[t_gone + 1 :].max() == 0
    for k in np.flatnonzero(s.power_pills[-1]):  # the others are drawn to the end
        assert _pill_pixels(game.frames[-100:], *POWER_PILL_XY[k]).max() == 28
    # the dots left are the dots drawn: 8-pixel blobs of pill colour in the maze (a sprite
    # passing over one hides it for a moment, so drawn <= decoded)
    drawn = np.array([_dots_drawn(f) for f in game.frames])
    assert drawn[0] == s.dots_left[0] == MAZE_ITEMS[0] - 4 == 150
    hidden = s.dots_left.astype(int) - drawn
    assert np.mean(hidden == 0) >= 0.3 and np.mean((hidden >= 0) & (hidden <= 6)) >= 0.99
    assert s.dots_eaten[-1] >= 40 and np.all(np.diff(s.dots_left.astype(int)) <= 0)
    # the bitmap's popcount is not it: 92 more bits, of cells that hold no dot
    bits = np.unpackbits(game.ram[:, 59:101], axis=1).sum(axis=1).astype(int)
    assert np.all(bits - s.dots_left == 92)


def _dots_drawn(frame: np.ndarray) -> int:
    from scipy import ndimage

    mask = np.all(frame[:MAZE_ROWS] == PILL_RGB, axis=-1)
    labels, n = ndimage.label(mask)
    return int((ndimage.sum(mask, labels, range(1, n + 1)) == 8).sum())


def test_direction_follows_motion(game: RamRollout) -> None:
    s = decode_ram_batch(game.ram)
    dx, dy = np.diff(s.player_x), np.diff(s.player_y)
    moving = (np.abs(dx) + np.abs(dy) > 0) & (np.abs(dx) < 10)  # not wrapping a tunnel
    heading = np.where(dx > 0, 1, np.where(dx < 0, 3, np.where(dy > 0, 2, 0)))
    assert moving.sum() > 200
    assert np.mean(heading[moving] == s.player_direction[1:][moving]) >= 0.95


def test_one_row_equals_the_batch_and_bad_input(game: RamRollout) -> None:
    s = decode_ram_batch(game.ram)
    assert decode_ram(game.ram[300]) == s.step(300)
    one = decode_ram(game.ram[0])
    assert one.power_pills_left == 4 and one.lives == 3 and not one.fruit_present
    assert ram_decoder("ms_pacman") is decode_ram_batch
    assert ram_decoder("MsPacman") is decode_ram_batch
    with pytest.raises(RlsaeError) as e:
        ram_decoder("pong")
    assert "\n" not in str(e.value) and "pong" in str(e.value)
    assert all(g in str(e.value) for g in GAMES_WITH_RAM_TABLE)
    with pytest.raises(RlsaeError):
        decode_ram_batch(np.zeros((3, 64), np.uint8))
    with pytest.raises(RlsaeError):
        decode_ram(np.zeros(127, np.uint8))


def test_the_address_table_cites_a_source_for_every_address() -> None:
    assert len({a.index for a in MSPACMAN_RAM}) == len(MSPACMAN_RAM)
    for a in MSPACMAN_RAM:
        assert 0 <= a.index < 128 and ("atariari" in a.sources or "OC_Atari" in a.sources)


def test_rollout_is_the_game_the_poster_env_plays_and_replays_a_recording() -> None:
    """Same seed and actions: ALEInterface's screens equal AtariVectorEnv's, so the RAM read
    along the way is the RAM of the recorded episode."""
    cfg = EnvConfig(mode="poster")  # sticky actions 0.25, frameskip 4, no no-ops
    actions = np.random.default_rng(4).integers(0, 9, size=150)
    env = AleVecEnv(cfg, 1, seed=None, autoreset=False)
    try:
        screens = [rgb_frame(env.reset_with_seeds([11])[0])]
        for a in actions:
            obs, _, _, _ = env.step(np.array([a]))
            screens.append(rgb_frame(np.asarray(obs)[0]))
    finally:
        env.close()
    doc = EpisodeLog(env=cfg, ale={}, config=RecordConfig(),
                     episodes=[RecordedEpisode(3, 11, actions.tolist())])  # fmt: skip
    run = replay_ram(doc, 3, frames=True)
    assert run.frames is not None and len(run.frames) == len(screens) == 151
    same = [np.array_equal(a, b) for a, b in zip(run.frames, screens, strict=True)]
    assert all(same), same.index(False)
    other = rollout_ram(actions, seed=12, repeat_action_probability=0.25, frames=True)
    assert other.frames is not None and not np.array_equal(other.frames[-1], screens[-1])
    # nature mode (0-30 no-ops drawn by the vector env): tests/agents/test_ram_replay.py


def test_fruit_is_where_the_cherry_is_drawn(game: RamRollout) -> None:
    """The first maze's fruit is a cherry (OCAtari's colour (184, 50, 50)): drawn, all of it
    near the decoded position, exactly when the RAM says a fruit is on the board."""
    assert game.frames is not None
    s = decode_ram_batch(game.ram)
    cherry = (184, 50, 50)
    in_maze = np.all(game.frames[:, :MAZE_ROWS] == cherry, axis=-1).sum(axis=(1, 2))
    near = np.array([_colour_near(f, s.fruit_x[t], s.fruit_y[t], cherry)
                     for t, f in enumerate(game.frames)])  # fmt: skip
    assert s.fruit_present.sum() >= 10  # the fruit comes in and wanders in this game
    assert np.all(in_maze[~s.fruit_present] == 0)
    np.testing.assert_array_equal(near[s.fruit_present], in_maze[s.fruit_present])
    assert np.all(in_maze[s.fruit_present] > 20)


def _without_ram(store: Path, dst: Path) -> Path:
    """A copy of the store without the recorded RAM column (as `dqn record` writes by default)."""
    import shutil

    import pandas as pd

    shutil.copytree(store, dst)
    ctx = pd.read_parquet(dst / "context.parquet")
    ctx.drop(columns=["ram"]).to_parquet(dst / "context.parquet", index=False)
    return dst


@pytest.fixture(scope="module")
def poster_recording_with_ram(poster_agent: Path, tmp_path_factory) -> Path:
    """The ``poster_recording`` fixture's recording, with the RAM read in lockstep (``--ram``)."""
    from rlsae.agents.record import record_activations

    out = tmp_path_factory.mktemp("acts-ram") / "fc1"
    return record_activations(
        poster_agent, "fc1", 240, out, epsilon=0.3, seed=5, n_envs=2, max_episode_steps=70,
        progress=False, ram=True,
    )  # fmt: skip


def test_recording_ram_replays_every_row_of_a_real_recording(
    poster_recording, poster_recording_with_ram, tmp_path
) -> None:
    """The RAM of a store written by `dqn record` (2 emulators, episodes cut at 70 steps,
    no RAM column): regenerated by replay, every replayed screen hashes to the row's obs_hash,
    the decoded score matches, and it equals, byte for byte, the RAM the same recording stored
    from its lockstep emulators with ``ram=True``."""
    import shutil

    import pandas as pd

    old = tmp_path / "old"
    shutil.copytree(poster_recording, old, ignore=shutil.ignore_patterns(RAM_CACHE))
    assert has_recorded_ram(poster_recording_with_ram) and not has_recorded_ram(old)
    assert recorded_ram(old) is None
    ram = recording_ram(old)  # verify=True checks every row's obs_hash
    stored = recorded_ram(poster_recording_with_ram)
    assert stored is not None and stored.tobytes() == ram.tobytes()
    ctx = pd.read_parquet(poster_recording_with_ram / "context.parquet")
    assert ram.shape == (len(ctx), 128) == (240, 128)
    s = decode_ram_batch(ram)
    for _, rows in ctx.groupby("episode"):
        # the reward of step t is the score between rows t and t + 1 of the same episode
        idx = rows.sort_values("step").index.to_numpy()
        np.testing.assert_array_equal(np.diff(s.score[idx]), rows.loc[idx[:-1], "reward"])
    (old / RAM_CACHE).unlink()
    assert recording_ram(old, verify=False).tobytes() == ram.tobytes()


def test_recording_ram_refuses_a_recording_it_cannot_reproduce(
    poster_recording_with_ram, tmp_path
) -> None:
    import pandas as pd

    store = _without_ram(poster_recording_with_ram, tmp_path / "store")
    ctx = pd.read_parquet(store / "context.parquet")
    ctx.loc[5, "obs_hash"] = "0" * 16
    ctx.to_parquet(store / "context.parquet")
    with pytest.raises(RlsaeError, match="differs from the recording") as e:
        recording_ram(store)
    assert "\n" not in str(e.value)
    assert not (store / RAM_CACHE).exists()  # nothing kept from a refused replay
    with pytest.raises(RlsaeError, match="not found"):
        recording_ram(tmp_path / "nowhere")


def _maze_frame(level: int, fruit: int | None = None) -> np.ndarray:
    """The screen a few frames after the game starts with the level byte (and the fruit kind
    bits of ram[123]) set."""
    import ale_py
    from ale_py import roms

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.setInt("random_seed", 0)
    ale.loadROM(str(roms.get_rom_path("ms_pacman")))
    for _ in range(5):
        ale.act(ale_py.Action.NOOP)
    ale.setRAM(0, level)
    if fruit is not None:
        ale.setRAM(123, (fruit << 4) | 2)
    for _ in range(5):
        ale.act(ale_py.Action.NOOP)
    return ale.getScreenRGB().copy()


MAZE_BG = (0, 28, 136)  # the corridors' colour


def _open_rows(frame: np.ndarray, column: int) -> list[int]:
    return np.flatnonzero(np.all(frame[:MAZE_ROWS, column] == MAZE_BG, axis=-1)).tolist()


def test_the_level_byte_selects_the_maze_and_its_tunnel_exits(game: RamRollout) -> None:
    """Each level byte 0-3 draws its own maze; its outer wall opens on both sides exactly on
    the rows MAZE_TUNNELS lists. The real game plays maze 0 (level byte 0 throughout) and its
    frames open on maze 0's rows."""
    frames = [_maze_frame(k) for k in range(4)]
    for k, f in enumerate(frames):
        want = [y for first, last in MAZE_TUNNELS[k] for y in range(first, last + 1)]
        assert _open_rows(f, 0) == want and _open_rows(f, 159) == want, k
    walls = [np.all(f[:MAZE_ROWS] == MAZE_BG, axis=-1) for f in frames]
    assert all(not np.array_equal(walls[i], walls[j]) for i in range(4) for j in range(i))
    assert game.frames is not None and (game.ram[:, 0] == 0).all()
    want0 = [y for first, last in MAZE_TUNNELS[0] for y in range(first, last + 1)]
    assert _open_rows(game.frames[0], 0) == want0


def test_a_real_game_passes_through_a_tunnel() -> None:
    """Seed 0, random directions held 4-15 steps: Ms. Pac-Man leaves by the left exit at rows
    98-109 of maze 0 and comes back on the right (RAM x 13 -> 170): in_tunnel holds on both
    sides of the wrap, and never away from the sides."""
    rng = np.random.default_rng(0)
    actions = np.repeat(rng.integers(1, 5, size=200), rng.integers(4, 16, size=200))
    run = rollout_ram(actions, seed=0)
    s = decode_ram_batch(run.ram)
    dx = np.diff(s.player_x)
    wraps = np.flatnonzero((np.abs(dx) > 100) & (np.diff(s.player_y) == 0))
    assert len(wraps) >= 1
    tunnel = s.in_tunnel()
    for t in wraps.tolist():
        assert 98 <= s.player_y[t] <= 110 and tunnel[t] and tunnel[t + 1]
        assert s.player_x[t] < TUNNEL_DEPTH and s.player_x[t + 1] > 160 - TUNNEL_DEPTH
    middle = (s.player_x >= TUNNEL_DEPTH) & (s.player_x <= 160 - TUNNEL_DEPTH)
    assert not tunnel[middle].any() and 0 < tunnel.mean() < 0.1


def test_fruit_kind_matches_the_fruit_the_hud_draws() -> None:
    """ram[123] bits 4-6 pick the fruit: each kind draws its own sprite in the HUD (x 126-133,
    y 173-182), in OCAtari's colour for kinds 0-5 (cherry ... pear). The banana (6) is drawn
    in (195, 144, 61), not OCAtari's (198, 108, 58): the published colour is wrong there."""
    ocatari = [(184, 50, 50), (184, 50, 50), (198, 108, 58), (162, 162, 42), (184, 50, 50),
               (110, 156, 66)]  # fmt: skip
    sprites = []
    for k in range(len(FRUITS)):
        f = _maze_frame(0, fruit=k)[173:183, 126:134]
        sprites.append(f)
        colours = {tuple(int(v) for v in px) for px in f.reshape(-1, 3)} - {(0, 0, 0)}
        assert colours == {ocatari[k] if k < 6 else (195, 144, 61)}, (k, colours)
        ram = np.zeros(128, np.uint8)
        ram[123] = (k << 4) | 2
        state = decode_ram(ram)
        assert state.fruit_kind == k and FRUITS[state.fruit_kind] == FRUITS[k] and state.lives == 3
    assert all(not np.array_equal(sprites[i], sprites[j]) for i in range(7) for j in range(i))
    assert FRUITS[0] == "cherry"  # the first level's fruit, drawn on the board in `game`


def test_levels_played_through_visit_the_mazes_and_fruits() -> None:
    """Levels 1-7 played by the game itself, each finished by setting the eaten counter
    ram[119] one short of MAZE_ITEMS and eating the next dot (one short of one less does not
    finish the first level of a maze): the level byte is the maze (levels 1-2 maze 0, 3-4 maze
    1, 5-6 maze 2, 7 maze 3; in every maze the side exits of MAZE_TUNNELS), the fruit kind
    counts up cherry .. banana, the HUD draws it, and the decoded dots left start at the
    maze's count."""
    import ale_py
    from ale_py import roms

    ale = ale_py.ALEInterface()
    ale.setLoggerMode(ale_py.LoggerMode.Error)
    ale.setInt("random_seed", 0)
    ale.setFloat("repeat_action_probability", 0.0)
    ale.loadROM(str(roms.get_rom_path("ms_pacman")))
    moves = ale.getMinimalActionSet()

    def bits() -> np.ndarray:
        return np.unpackbits(ale.getRAM()[59:101])

    def finish(counter: int, action: int, frames: int = 900) -> bool:
        ale.setRAM(119, counter)
        for _ in range(frames):
            ale.act(moves[action])
            if bits().sum() > 100:  # the maze is refilled: the next level
                return True
        return False

    mazes, fruits = [], []
    for level in range(1, 8):
        for _ in range(30):
            ale.act(moves[0])
        ram, frame = ale.getRAM(), ale.getScreenRGB()
        maze = int(ram[0])
        mazes.append(maze)
        fruits.append(decode_ram(ram).fruit_kind)
        assert decode_ram(ram).dots_left == MAZE_ITEMS[maze] - 4
        want = [y for first, last in MAZE_TUNNELS[maze] for y in range(first, last + 1)]
        assert _open_rows(frame, 0) == want == _open_rows(frame, 159), level
        hud = {tuple(int(v) for v in px) for px in frame[173:183, 126:134].reshape(-1, 3)}
        assert hud - {(0, 0, 0)} == {
            tuple(int(v) for v in px) for px in _maze_frame(0, fruits[-1])[173:183, 126:134]
            .reshape(-1, 3)} - {(0, 0, 0)}  # fmt: skip
        start = ale.cloneState()
        for action in (1, 2, 3, 4):  # the first dot some direction reaches
            ale.restoreState(start)
            before, t = bits(), 0
            while t < 1500 and not (bits() < before).any():
                before = bits()
                ale.act(moves[action])
                t += 1
            if t < 1500:
                break
        eaten = int(np.flatnonzero(bits() < before)[0])
        ale.restoreState(start)
        for _ in range(t - 3):
            ale.act(moves[action])
        only = np.zeros(42 * 8, dtype=np.uint8)
        only[eaten] = 1
        for i, byte in enumerate(np.packbits(only).tolist()):
            ale.setRAM(59 + i, byte)
        if maze not in mazes[:-1]:  # one short of one less: the level goes on
            before_state = ale.cloneState()
            assert not finish(MAZE_ITEMS[maze] - 2, action, 600), level
            ale.restoreState(before_state)
        assert finish(MAZE_ITEMS[maze] - 1, action), level
    assert mazes == [0, 0, 1, 1, 2, 2, 3]
    assert [FRUITS[k] for k in fruits] == list(FRUITS)
