"""Pixel-identical, faster drop-in replacement for gymnasium's ``CarRacing-v3``.

Almost all of a stock ``CarRacing`` step is spent rendering: ``_render_road``
rotates, scales, translates and bounds-checks every one of the ~700
background/grass/road polygons in Python, one ``pygame.math.Vector2`` at a
time, although only a few dozen of them end up on screen; and ``_render``
builds a fresh ``pygame.font.Font`` (with an empty glyph cache) every frame
just to print the score.

:class:`FastCarRacing` performs the same computation in bulk and skips only
work that provably cannot change a pixel:

* The polygon geometry (play-field background, the 400 grass patches, and the
  road/border polygons of the current track) is stacked once per track into
  ``(4, N)`` float64 arrays.  Each frame it is transformed with numpy using
  the very same sequence of IEEE-754 double operations as the stock code
  (``c*x - s*y``, ``s*x + c*y``, ``* zoom``, ``+ translation``), and the same
  "any vertex inside the enlarged screen box" test selects the polygons to
  draw.  They are drawn with the same ``gfxdraw`` calls, in the same order,
  with the same float coordinates and colours.
* ``pygame.math.Vector2.rotate_rad`` reduces the angle modulo 2*pi and
  special-cases angles within ``epsilon`` of a multiple of pi/2 before taking
  sin/cos.  Rather than re-implementing that, the cosine and sine pygame uses
  are read off by rotating the unit vector ``(1, 0)``: the result is exactly
  ``(c, s)``, and as rotation is ``(c*x - s*y, s*x + c*y)`` the vectorized
  transform reproduces ``rotate_rad`` to the last bit (also in the special
  cases, where ``(c, s)`` is ``(+-1, 0)`` / ``(0, +-1)``; only the sign of an
  exact zero could differ, which cannot change a pixel).
* Road tile colours are *not* cached: the contact listener recolours a tile
  in place when it is first touched, so colours are read from
  ``self.road_poly`` at draw time (only for the polygons drawn).
* Culling of no-op draws: the stock box is ``MAX_SHAPE_DIM`` (~380 px) larger
  than the 1000x800 surface, so about half of the polygons it draws lie
  entirely off the surface.  A polygon is skipped if its bounding box is more
  than 4 px outside the surface (gfxdraw clips, anti-aliasing spreads one
  pixel), or lies entirely in the first 100 rows of the (not yet flipped)
  road surface: after the vertical flip those become the bottom rows that
  ``_render_indicators`` paints over with an opaque black rectangle.  For the
  same reason those 100 rows are neither cleared nor copied by the flip.
* The background polygon usually covers the whole surface.  Then clearing a
  fresh surface and scan-filling the polygon is replaced by one ``fill`` with
  the pixel value gfxdraw itself produces for the background colour (obtained
  with ``gfxdraw.pixel`` on a 1x1 surface, so float colours with
  ``domain_randomize`` convert identically).  Otherwise (zoom-in frames, near
  the play-field edge) the surface is cleared and the polygon drawn as stock.
* The road surface and the flipped surface are allocated once and reused; the
  vertical flip is a numpy row copy into the persistent surface, giving the
  same pixels as ``pygame.transform.flip``.  Every frame rewrites all of
  both surfaces that reaches the observation, so all environments of one
  thread share one pair: several environments stepped in turn in one process
  (a worker of ``data_gen.envpool``) then work in the same 6 MB instead of 6 MB
  each, which keeps more in cache (measured, eight environments stepped in
  turn: 3.2 ms of CPU per step with private surfaces, 2.9 ms shared; one
  environment alone: 2.3 ms).
* The score font is created once per environment (instead of once per frame)
  and the rendered score text is cached by its string, so unchanged score
  text is simply blitted again.  Font rendering is deterministic, so the
  blitted pixels are the same.

Everything else (physics, rewards, terminations, indicators, the car
drawing and the final ``smoothscale``) is inherited or done with the same
pygame calls as the stock environment, so observations, rewards,
terminations, truncations and infos are identical to ``CarRacing-v3`` for the
same seed and actions (verified by ``tests/data_gen/test_fast_car_racing.py``
over full episodes, including the zoom-in frames at the start, with default
settings, ``domain_randomize=True``, ``continuous=False`` and
``render_mode="rgb_array"``).  No frame is known to differ, so no error bound
is needed.  Remaining cost per step is mostly pygame itself: gfxdraw
polygon filling/anti-aliasing of the few dozen visible polygons, the fill,
the flip copy and ``smoothscale``.

This module imports only numpy, pygame and gymnasium (no TensorFlow) and does
no work at import time beyond defining the class; call :func:`register` to
make ``gymnasium.make("CarRacingFast-v3")`` available.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np
import pygame
from gymnasium.envs.box2d import car_racing as _cr
from pygame import gfxdraw

__all__ = ["ENV_ID", "FastCarRacing", "register"]

#: Gymnasium id under which :func:`register` registers :class:`FastCarRacing`.
ENV_ID = "CarRacingFast-v3"
_ENTRY_POINT = "data_gen.fast_car_racing:FastCarRacing"
_STOCK_ID = "CarRacing-v3"

# Score-text cache entries per environment before the cache is cleared.
_TEXT_CACHE_MAX = 4096


def _static_polygons() -> np.ndarray:
    """Return the background and grass polygons as a ``(401, 4, 2)`` array.

    Vertices are computed with the same Python float expressions, in the same
    order, as ``CarRacing._render_road``; index 0 is the play-field
    background, indices 1..400 the grass patches.
    """
    b = _cr.PLAYFIELD
    polys = [[(b, b), (b, -b), (-b, -b), (-b, b)]]
    g = _cr.GRASS_DIM
    for x in range(-20, 20, 2):
        for y in range(-20, 20, 2):
            polys.append(
                [(g * x + g, g * y + 0), (g * x + 0, g * y + 0), (g * x + 0, g * y + g), (g * x + g, g * y + g)]
            )
    return np.array(polys, dtype=np.float64)


_STATIC_POLYS: np.ndarray | None = None


def _get_static_polygons() -> np.ndarray:
    """Lazily build (once per process) and return the static polygons."""
    global _STATIC_POLYS
    if _STATIC_POLYS is None:
        _STATIC_POLYS = _static_polygons()
        _STATIC_POLYS.setflags(write=False)
    return _STATIC_POLYS


_N_STATIC = 1 + 20 * 20  # background + grass patches

# A polygon whose bounding box lies more than this many pixels outside the
# surface cannot touch a pixel (gfxdraw clips to the surface; anti-aliased
# edges spread at most one pixel beyond the integer vertex coordinates), so it
# is not drawn.  Generous on purpose.
_CULL_MARGIN = 4.0

# The first rows of the (not yet flipped) road surface become, after the
# vertical flip, the bottom rows that ``_render_indicators`` paints over with
# an opaque black rectangle (rows ``WINDOW_H - 5 * WINDOW_H / 40`` .. end),
# so polygons lying entirely in them cannot change the final image either.
_HIDDEN_ROWS = 5 * _cr.WINDOW_H / 40.0
_N_HIDDEN = int(_HIDDEN_ROWS)  # == 100; rows 0..99 of the road surface
# The part of the road surface that survives into the final image.
_SHOWN_RECT = (0, _N_HIDDEN, _cr.WINDOW_W, _cr.WINDOW_H - _N_HIDDEN)

# Render surfaces shared by the environments of one thread (freed with the thread).
_THREAD_SURFACES = threading.local()


def _shared_surface(name: str, make: Callable[[], pygame.Surface]) -> pygame.Surface:
    surf = getattr(_THREAD_SURFACES, name, None)
    if surf is None:
        surf = make()
        setattr(_THREAD_SURFACES, name, surf)
    return surf


def _covers_surface(quad: Sequence[tuple[float, float]], width: float, height: float, margin: float) -> bool:
    """Whether the convex ``quad`` contains the surface grown by ``margin``.

    True only if every corner of ``[-margin, width + margin] x [-margin,
    height + margin]`` is at least ``margin`` pixels inside every edge.
    """
    corners = (
        (-margin, -margin),
        (width + margin, -margin),
        (width + margin, height + margin),
        (-margin, height + margin),
    )
    sign = 0.0
    for k in range(4):
        x0, y0 = quad[k]
        x1, y1 = quad[(k + 1) % 4]
        ex, ey = x1 - x0, y1 - y0
        length = (ex * ex + ey * ey) ** 0.5
        if not length > 0.0:
            return False
        for cx, cy in corners:
            d = (ex * (cy - y0) - ey * (cx - x0)) / length
            if sign == 0.0:
                sign = 1.0 if d > 0 else -1.0
            if d * sign <= margin:
                return False
    return True


class FastCarRacing(_cr.CarRacing):
    """``CarRacing`` with bulk (numpy) road rendering and a cached score text.

    Takes the same keyword arguments as gymnasium's ``CarRacing`` and produces
    identical observations, rewards, terminations, truncations and infos; see
    the module docstring for what is done differently and why it is exact.
    """

    # CarRacing sets these to None without declaring a type, which mypy reads as "always None"
    surf: Any
    clock: Any

    def __init__(
        self,
        render_mode: str | None = None,
        verbose: bool = False,
        lap_complete_percent: float = 0.95,
        domain_randomize: bool = False,
        continuous: bool = True,
    ) -> None:
        """Create the environment; arguments are those of ``CarRacing``."""
        super().__init__(
            render_mode=render_mode,
            verbose=verbose,
            lap_complete_percent=lap_complete_percent,
            domain_randomize=domain_randomize,
            continuous=continuous,
        )
        # Geometry cache for the current track (rebuilt when road_poly changes).
        self._geom_src: list | None = None
        self._geom_len = -1
        self._geom: tuple[np.ndarray, np.ndarray] | None = None
        self._canvas: pygame.Surface | None = None
        self._scratch: pygame.Surface | None = None
        self._flipped: pygame.Surface | None = None
        # Score font and rendered-text cache.
        self._font: pygame.font.Font | None = None
        self._text_cache: dict[str, tuple[pygame.Surface, pygame.Rect]] = {}

    # ------------------------------------------------------------------ road
    def _road_geometry(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Return the stacked polygon vertices for the current track.

        The result is ``(gx, gy)``, two C-contiguous ``(4, N)`` arrays of the
        x and y world coordinates of vertex ``k`` of polygon ``i``; polygon 0
        is the background, 1..400 the grass, then ``road_poly`` in order.
        Rebuilt whenever ``road_poly`` is replaced (every reset).  Returns
        ``None`` if ``road_poly`` holds a polygon that is not a quadrilateral
        (never the case for stock tracks); the caller then falls back to the
        stock per-polygon path.
        """
        road_poly = self.road_poly
        if self._geom_src is not road_poly or self._geom_len != len(road_poly):
            self._geom_src = road_poly
            self._geom_len = len(road_poly)
            if any(len(poly) != 4 for poly, _ in road_poly):
                self._geom = None
            else:
                road = np.array([[(p[0], p[1]) for p in poly] for poly, _ in road_poly], dtype=np.float64).reshape(
                    -1, 4, 2
                )
                geom = np.concatenate([_get_static_polygons(), road])
                self._geom = (np.ascontiguousarray(geom[:, :, 0].T), np.ascontiguousarray(geom[:, :, 1].T))
        return self._geom

    def _mapped_color(self, color: Any) -> int:
        """Return the pixel value gfxdraw writes for ``color`` on ``self.surf``.

        Obtained by letting gfxdraw itself plot the colour on a 1x1 surface of
        the same format, so colour conversion (e.g. of the float colours used
        with ``domain_randomize``) is exactly gfxdraw's.
        """
        scratch = self._scratch
        if scratch is None:
            scratch = self._scratch = pygame.Surface((1, 1), 0, self.surf)
        gfxdraw.pixel(scratch, 0, 0, color)
        return scratch.get_at_mapped((0, 0))

    def _screen_polygons(
        self, geom: tuple[np.ndarray, np.ndarray], zoom: float, translation: Any, angle: float
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Transform all polygons to screen coordinates and select them.

        Returns ``(px, py, stock, drawn)``: the ``(4, N)`` screen coordinates
        (bit-identical to the stock per-vertex computation), the boolean mask
        of polygons the stock code draws, and the mask of non-background
        polygons that can change a visible pixel and are therefore drawn here
        (a subset of ``stock``).
        """
        gx, gy = geom
        W, H = _cr.WINDOW_W, _cr.WINDOW_H

        # The exact (cos, sin) pair pygame's rotate_rad uses for this angle
        # (after its modulo-2*pi reduction and right-angle special cases).
        c, s = pygame.math.Vector2(1.0, 0.0).rotate_rad(angle)
        tx, ty = translation[0], translation[1]
        px = (c * gx - s * gy) * zoom + tx
        py = (s * gx + c * gy) * zoom + ty

        # Stock test: draw if any vertex lies in the enlarged screen box.
        m = _cr.MAX_SHAPE_DIM
        inside = (px >= -m) & (px <= W + m) & (py >= -m) & (py <= H + m)
        stock = inside[0] | inside[1] | inside[2] | inside[3]
        stock[0] = True  # the background is drawn unclipped
        # Of those, only polygons whose bounding box reaches the surface can
        # change a pixel; the others would be clipped away entirely by gfxdraw.
        # Rows above _HIDDEN_ROWS end up under the indicator panel.
        e = _CULL_MARGIN
        drawn = stock.copy()
        drawn &= np.maximum(np.maximum(px[0], px[1]), np.maximum(px[2], px[3])) >= -e
        drawn &= np.minimum(np.minimum(px[0], px[1]), np.minimum(px[2], px[3])) <= W + e
        drawn &= np.maximum(np.maximum(py[0], py[1]), np.maximum(py[2], py[3])) >= _HIDDEN_ROWS - e
        drawn &= np.minimum(np.minimum(py[0], py[1]), np.minimum(py[2], py[3])) <= H + e
        drawn[0] = False  # the background is handled by _render_road
        return px, py, stock, drawn

    def _render_road(self, zoom: float, translation: Any, angle: float) -> None:
        """Clear ``self.surf`` and draw background, grass and road.

        Produces exactly the pixels of ``CarRacing._render_road`` on a fresh
        (black) surface: same polygons, same order, same float coordinates
        and colours, same ``gfxdraw`` calls.  The transform and the visibility
        test are done for all polygons at once, polygons that cannot reach
        the surface are skipped, and when the background polygon covers the
        whole surface with a margin, clearing plus filling it is replaced by
        a single ``fill`` with gfxdraw's pixel value for the colour.
        """
        geom = self._road_geometry()
        if geom is None:  # pragma: no cover - defensive, not reachable stock
            self.surf.fill(0)
            super()._render_road(zoom, translation, angle)
            return
        px, py, _, drawn = self._screen_polygons(geom, zoom, translation, angle)
        idx = np.flatnonzero(drawn)
        W, H = _cr.WINDOW_W, _cr.WINDOW_H

        surf = self.surf
        aapolygon = gfxdraw.aapolygon
        filled_polygon = gfxdraw.filled_polygon
        bg_color = self.bg_color
        bg = [(float(px[k, 0]), float(py[k, 0])) for k in range(4)]
        if _covers_surface(bg, W, H, _CULL_MARGIN):
            # Every pixel gets the background colour; its edges are far
            # outside the surface, so the anti-aliased outline draws nothing.
            surf.fill(self._mapped_color(bg_color), _SHOWN_RECT)
        else:
            surf.fill(0, _SHOWN_RECT)
            aapolygon(surf, bg, bg_color)
            filled_polygon(surf, bg, bg_color)

        pts = np.stack([px[:, idx], py[:, idx]], axis=-1).tolist()
        grass_color = self.grass_color
        road_poly = self.road_poly
        color: Any
        for i, k in enumerate(idx.tolist()):
            poly = [pts[0][i], pts[1][i], pts[2][i], pts[3][i]]
            if k < _N_STATIC:
                color = grass_color
            else:
                color = [int(v) for v in road_poly[k - _N_STATIC][1]]
            aapolygon(surf, poly, color)
            filled_polygon(surf, poly, color)

    # ----------------------------------------------------------------- text
    def _score_text(self, text: str) -> tuple[pygame.Surface, pygame.Rect]:
        """Return the rendered score ``text`` and its placed rect (cached)."""
        hit = self._text_cache.get(text)
        if hit is not None:
            return hit
        if len(self._text_cache) >= _TEXT_CACHE_MAX:
            self._text_cache.clear()
        try:
            if self._font is None:
                raise pygame.error("no font yet")
            surface = self._font.render(text, True, (255, 255, 255), (0, 0, 0))
        except pygame.error:
            # First use, or the font module was re-initialised (pygame.quit()).
            self._font = pygame.font.Font(pygame.font.get_default_font(), 42)
            surface = self._font.render(text, True, (255, 255, 255), (0, 0, 0))
        rect = surface.get_rect()
        rect.center = (60, _cr.WINDOW_H - _cr.WINDOW_H * 2.5 / 40.0)
        self._text_cache[text] = (surface, rect)
        return surface, rect

    # --------------------------------------------------------------- render
    def _render(self, mode: str) -> Any:
        """Render a frame; same steps as ``CarRacing._render``.

        Differences are purely in how the work is done: the road is drawn by
        the vectorized :meth:`_render_road` onto a persistent canvas, the flip
        is a row copy into a persistent surface, and the score text comes
        from a cache instead of a freshly created font every frame.
        """
        assert mode in self.metadata["render_modes"]

        if not pygame.font.get_init():
            pygame.font.init()
            self._font = None
        if self.screen is None and mode == "human":
            pygame.display.init()
            self.screen = pygame.display.set_mode((_cr.WINDOW_W, _cr.WINDOW_H))
        if self.clock is None:
            self.clock = pygame.time.Clock()

        if "t" not in self.__dict__:
            return  # reset() not called yet

        # A persistent road canvas; _render_road clears its visible part.
        # (Returned observations are fresh numpy arrays, never views of it.)
        self._canvas = _shared_surface("canvas", lambda: pygame.Surface((_cr.WINDOW_W, _cr.WINDOW_H)))
        self.surf = self._canvas

        assert self.car is not None
        angle = -self.car.hull.angle
        # Animating first second zoom.
        zoom = 0.1 * _cr.SCALE * max(1 - self.t, 0) + _cr.ZOOM * _cr.SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans: Any = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        trans = (_cr.WINDOW_W / 2 + trans[0], _cr.WINDOW_H / 4 + trans[1])

        self._render_road(zoom, trans, angle)
        self.car.draw(self.surf, zoom, trans, angle, mode not in ["state_pixels_list", "state_pixels"])

        # Same pixels as pygame.transform.flip(self.surf, False, True), but
        # copied into a persistent surface instead of a fresh allocation.
        self._flipped = _shared_surface("flipped", self._canvas.copy)
        src = pygame.surfarray.pixels2d(self._canvas)
        dst = pygame.surfarray.pixels2d(self._flipped)
        # Road-surface rows 0.._N_HIDDEN-1 would land under the indicator
        # panel, which _render_indicators paints opaque black: not copied.
        dst[:, : _cr.WINDOW_H - _N_HIDDEN] = src[:, _N_HIDDEN:][:, ::-1]
        del src, dst  # unlock both surfaces
        self.surf = self._flipped

        # showing stats
        self._render_indicators(_cr.WINDOW_W, _cr.WINDOW_H)

        text, text_rect = self._score_text(f"{self.reward:04.0f}")
        self.surf.blit(text, text_rect)

        if mode == "human":
            pygame.event.pump()
            self.clock.tick(self.metadata["render_fps"])
            assert self.screen is not None
            self.screen.fill(0)
            self.screen.blit(self.surf, (0, 0))
            pygame.display.flip()
        elif mode == "rgb_array":
            return self._create_image_array(self.surf, (_cr.VIDEO_W, _cr.VIDEO_H))
        elif mode == "state_pixels":
            return self._create_image_array(self.surf, (_cr.STATE_W, _cr.STATE_H))
        else:
            return self.isopen

    def close(self) -> None:
        """Close the environment and drop the cached font and text."""
        self._font = None
        self._text_cache.clear()
        super().close()


def register() -> None:
    """Register :class:`FastCarRacing` with gymnasium as ``CarRacingFast-v3``.

    Uses the same kwargs, ``max_episode_steps`` and ``reward_threshold`` as
    the stock ``CarRacing-v3`` registration.  Idempotent: does nothing if the
    id is already registered.
    """
    if ENV_ID in gym.envs.registry:
        return
    stock = gym.spec(_STOCK_ID)
    gym.register(
        id=ENV_ID,
        entry_point=_ENTRY_POINT,
        kwargs=dict(stock.kwargs),
        max_episode_steps=stock.max_episode_steps,
        reward_threshold=stock.reward_threshold,
    )
