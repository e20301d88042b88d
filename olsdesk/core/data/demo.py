"""The built-in demo dataset: synthetic, RadImageNet-like, 3 modalities x 4 findings.

CT-, MR- and ultrasound-like scenes (their own anatomy, contrast and noise) each carry
one of four findings: none, a small focal lesion, a large lesion, or a diffuse/fluid
change. Modalities are easy to tell apart; findings within a modality overlap in size
and contrast, so the mistakes a classifier makes stay mostly inside a modality and the
OLS soft-label matrix grows a visible block structure. Every image is a function of
(seed, class, index) alone, so the set is reproducible and cheap (about 1 ms an image).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES: tuple[str, ...] = (
    "CT/lung/normal",
    "CT/lung/nodule",
    "CT/lung/mass",
    "CT/lung/effusion",
    "MR/brain/normal",
    "MR/brain/lesion",
    "MR/brain/tumor",
    "MR/brain/edema",
    "US/abdomen/normal",
    "US/abdomen/calcification",
    "US/abdomen/solid_mass",
    "US/abdomen/cyst",
)
NORMAL, SMALL, LARGE, DIFFUSE = range(4)


@dataclass(frozen=True)
class DemoData:
    """Images (N x H x W, uint8), integer labels and the class names."""

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]


def make_demo(per_class: int = 200, image_size: int = 64, seed: int = 0) -> DemoData:
    """``per_class`` images of each of the 12 classes, ``image_size`` square."""
    if per_class < 1 or image_size < 16:
        raise ValueError("the demo set needs at least 1 image per class and 16 pixels a side")
    n = per_class * len(CLASS_NAMES)
    images = np.empty((n, image_size, image_size), dtype=np.uint8)
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    for i, label in enumerate(labels):
        rng = np.random.default_rng([seed, int(label), i % per_class])
        images[i] = render(int(label), image_size, rng)
    return DemoData(images, labels, CLASS_NAMES)


def render(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One image of class ``label`` as uint8."""
    modality, finding = divmod(label, 4)
    grid = _Grid(size)
    image = (_ct, _mr, _us)[modality](grid, finding, rng)
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


class _Grid:
    def __init__(self, size: int) -> None:
        axis = np.linspace(-1.0, 1.0, size)
        self.y, self.x = np.meshgrid(axis, axis, indexing="ij")
        self.size = size
        self.px = 2.0 / (size - 1)  # one pixel in grid units

    def ellipse(self, cy, cx, ry, rx, angle=0.0, soft=1.0):
        """A filled ellipse in [0, 1] with an edge ``soft`` pixels wide."""
        c, s = np.cos(angle), np.sin(angle)
        dy, dx = self.y - cy, self.x - cx
        u, v = dx * c + dy * s, -dx * s + dy * c
        r = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
        edge = soft * self.px / max(min(rx, ry), 1e-6)
        return np.clip((1.0 - r) / edge + 0.5, 0.0, 1.0)

    def blob(self, cy, cx, radius_px, rng, lobes=1):
        """A round or lobulated blob; ``radius_px`` in pixels."""
        r = radius_px * self.px
        out = self.ellipse(cy, cx, r, r * rng.uniform(0.8, 1.2), rng.uniform(0, np.pi))
        for _ in range(lobes - 1):
            a = rng.uniform(0, 2 * np.pi)
            out = np.maximum(
                out,
                self.ellipse(cy + 0.6 * r * np.sin(a), cx + 0.6 * r * np.cos(a),
                             0.7 * r, 0.7 * r * rng.uniform(0.8, 1.2)),
            )
        return out

    def smooth_noise(self, rng, scale_px):
        """Band-limited noise with unit standard deviation (for texture and bias fields)."""
        noise = rng.normal(size=(self.size, self.size))
        k = np.fft.fftfreq(self.size)
        ky, kx = np.meshgrid(k, k, indexing="ij")
        filt = np.exp(-(ky**2 + kx**2) * (np.pi * scale_px) ** 2 / 2)
        out = np.real(np.fft.ifft2(np.fft.fft2(noise) * filt))
        return out / (out.std() + 1e-9)


def _lesion_radius(finding: int, rng: np.random.Generator, size: int) -> float:
    """Small and large lesions overlap in size (in pixels at this image size)."""
    scale = size / 64.0
    if finding == SMALL:
        return rng.uniform(1.5, 3.2) * scale
    return rng.uniform(3.0, 6.0) * scale


def _ct(g: _Grid, finding: int, rng: np.random.Generator) -> np.ndarray:
    body = g.ellipse(rng.uniform(-0.05, 0.05), 0, rng.uniform(0.6, 0.75), rng.uniform(0.8, 0.92))
    img = 0.02 + body * (0.5 + 0.03 * g.smooth_noise(rng, 3))
    lung_y = rng.uniform(-0.12, 0.0)
    side = rng.choice([-1.0, 1.0])
    lungs = []
    for sx in (-1.0, 1.0):
        lung = g.ellipse(lung_y, sx * 0.38, rng.uniform(0.38, 0.46), rng.uniform(0.24, 0.3), sx * 0.15)
        lungs.append(lung)
        img = img * (1 - lung) + lung * (0.12 + 0.02 * g.smooth_noise(rng, 2))
    img = np.maximum(img, 0.9 * g.ellipse(0.5, 0, 0.09, 0.08))  # vertebra
    lung = lungs[int(side > 0)]
    for _ in range(rng.integers(2, 6)):  # vessels: small bright dots in every class
        cy, cx = lung_y + rng.uniform(-0.25, 0.25), side * 0.38 + rng.uniform(-0.12, 0.12)
        img += rng.uniform(0.15, 0.3) * g.blob(cy, cx, rng.uniform(0.8, 1.5), rng) * lung
    if finding in (SMALL, LARGE):
        cy, cx = lung_y + rng.uniform(-0.2, 0.2), side * 0.38 + rng.uniform(-0.1, 0.1)
        lobes = 1 if finding == SMALL else rng.integers(1, 4)
        mark = g.blob(cy, cx, _lesion_radius(finding, rng, g.size), rng, lobes)
        img += rng.uniform(0.3, 0.55) * mark * lung
    elif finding == DIFFUSE:  # pleural effusion: the dependent part of a lung fills with fluid
        level = lung_y + rng.uniform(0.0, 0.3)
        fluid = np.clip((g.y - level) / (2 * g.px), 0, 1) * lung
        img = img * (1 - fluid) + fluid * rng.uniform(0.35, 0.5)
    return np.clip(img + rng.normal(0, rng.uniform(0.02, 0.05), img.shape), 0, 1)


def _mr(g: _Grid, finding: int, rng: np.random.Generator) -> np.ndarray:
    ry, rx = rng.uniform(0.72, 0.85), rng.uniform(0.6, 0.72)
    head = g.ellipse(0, 0, ry, rx)
    brain = g.ellipse(0, 0, ry - 0.08, rx - 0.08)
    img = 0.75 * (head - brain) + brain * (0.42 + 0.05 * g.smooth_noise(rng, 2.5))
    for sx in (-1.0, 1.0):  # ventricles
        img -= 0.25 * g.ellipse(-0.05, sx * 0.1, rng.uniform(0.15, 0.22), 0.06, sx * 0.3)
    if finding in (SMALL, LARGE):
        cy, cx = rng.uniform(-0.45, 0.45), rng.choice([-1, 1]) * rng.uniform(0.2, 0.4)
        r = _lesion_radius(finding, rng, g.size)
        mark = g.blob(cy, cx, r, rng, 1 if finding == SMALL else rng.integers(1, 3))
        if finding == LARGE and rng.random() < 0.5:  # ring enhancement with a necrotic core
            mark = mark - 0.6 * g.blob(cy, cx, r * 0.55, rng)
        img += rng.uniform(0.3, 0.5) * mark * brain
    elif finding == DIFFUSE:  # oedema: a large, faint, ill-defined bright region
        cy, cx = rng.uniform(-0.35, 0.35), rng.choice([-1, 1]) * rng.uniform(0.15, 0.35)
        spread = rng.uniform(0.18, 0.32)
        area = np.exp(-((g.y - cy) ** 2 + (g.x - cx) ** 2) / (2 * spread**2))
        img += rng.uniform(0.15, 0.3) * area * brain
    bias = 1.0 + 0.12 * g.smooth_noise(rng, 12)
    img = np.clip(img * bias, 0, None)
    sigma = rng.uniform(0.02, 0.04)
    return np.clip(np.hypot(img + rng.normal(0, sigma, img.shape), rng.normal(0, sigma, img.shape)), 0, 1)


def _us(g: _Grid, finding: int, rng: np.random.Generator) -> np.ndarray:
    apex_y = -1.05
    depth = np.hypot(g.y - apex_y, g.x)
    angle = np.arctan2(g.x, g.y - apex_y)
    half = rng.uniform(0.55, 0.7)
    fan = ((np.abs(angle) < half) & (depth > 0.15) & (depth < 1.95)).astype(float)
    echo = 0.5 * np.exp(-0.35 * depth) + 0.06 * g.smooth_noise(rng, 4)
    # an organ boundary: a bright curved line across the fan
    boundary = np.exp(-((depth - rng.uniform(0.5, 0.7)) ** 2) / (2 * 0.02**2))
    echo = echo + 0.25 * boundary
    cy, cx = rng.uniform(0.0, 0.5), rng.uniform(-0.3, 0.3)
    if finding == SMALL:  # calcification: a bright focus with an acoustic shadow below it
        r = _lesion_radius(SMALL, rng, g.size) * 0.8
        spot = g.blob(cy, cx, r, rng)
        shadow = (np.abs(g.x - cx) < r * g.px) & (g.y > cy)
        echo = echo * np.where(shadow, rng.uniform(0.3, 0.6), 1.0) + rng.uniform(0.4, 0.6) * spot
    elif finding == LARGE:  # solid mass: hypoechoic, lobulated
        mark = g.blob(cy, cx, _lesion_radius(LARGE, rng, g.size), rng, rng.integers(1, 3))
        echo = echo * (1 - rng.uniform(0.5, 0.7) * mark)
    elif finding == DIFFUSE:  # cyst: anechoic, round, with posterior enhancement
        r = _lesion_radius(LARGE, rng, g.size)
        mark = g.blob(cy, cx, r, rng)
        below = (np.abs(g.x - cx) < r * g.px) & (g.y > cy + r * g.px)
        echo = echo * (1 - rng.uniform(0.7, 0.9) * mark) * np.where(below, rng.uniform(1.1, 1.4), 1)
    speckle = 1.0 + 0.45 * (rng.rayleigh(scale=np.sqrt(2 / np.pi), size=echo.shape) - 1.0)
    return np.clip(echo * speckle * fan, 0, 1)
