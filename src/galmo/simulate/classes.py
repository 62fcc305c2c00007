"""The ten Galaxy10 DECaLS classes as recipes of physical components.

Each recipe draws a redshift and luminosity from a magnitude-limited sample (r < 17.8,
0.02 < z < 0.15), a size from the luminosity–size relation, then structural parameters whose
ranges overlap between neighbouring classes (round vs in-between axis ratios, tight vs loose pitch
angles, weak bars in unbarred spirals), and renders the components on a padded canvas
(:class:`~galmo.simulate.profiles.Scene`). Every drawn parameter goes into the truth row.
See ``docs/simulator.md`` for the recipes and their references.
"""

from __future__ import annotations

import math

import numpy as np

from galmo.core.schema import GALAXY10_CLASSES
from galmo.simulate import physics as ph
from galmo.simulate import profiles as pr

# class index -> (mean M_r, σ M_r, early-type size relation)
LUMINOSITY = {
    0: (-20.6, 0.9, False), 1: (-21.1, 0.9, False), 2: (-21.2, 0.9, True), 3: (-21.0, 0.9, True),
    4: (-20.7, 0.9, True), 5: (-21.1, 0.8, False), 6: (-21.1, 0.8, False), 7: (-20.7, 0.8, False),
    8: (-20.3, 0.8, False), 9: (-20.9, 0.8, False),
}

# Galaxy10 keeps galaxies whose volunteer votes were confident, which favours well-resolved ones:
# each class has a soft minimum apparent half-light radius (arcsec) for a galaxy to be kept.
MIN_R50 = {0: 3.0, 1: 2.5, 2: 1.5, 3: 1.5, 4: 1.5, 5: 4.0, 6: 4.0, 7: 4.0, 8: 3.5, 9: 4.5}

NAN = float("nan")


def default_truth() -> dict:
    """Every structural truth column, with its 'not applicable' value."""
    t = {k: NAN for k in (
        "abs_mag_r", "r50_kpc", "r50_arcsec", "bulge_n", "bulge_re_arcsec", "bulge_q", "disk_re_arcsec",
        "disk_scale_arcsec", "disk_h_over_r", "inclination_deg", "axis_ratio", "pa_deg", "bar_length_arcsec",
        "bar_q", "bar_angle_deg", "pitch_deg", "arm_sharpness", "merger_flux_ratio", "merger_sep_arcsec",
        "ring_radius_arcsec")}
    t.update({k: 0.0 for k in (
        "bulge_frac", "disk_frac", "bar_frac", "bar_strength", "arm_frac", "arm_strength", "knot_frac",
        "clumpiness", "lopsidedness", "tidal_frac", "dust_tau_g")})
    t.update({"n_arms": 0, "tidal_features": False, "dust_lane": False, "companion_type": "",
              "n_components": 1})
    return t


class Builder:
    """Draws one galaxy of class ``cls`` and renders it into a :class:`Scene` (``self.scene``)."""

    def __init__(self, rng: np.random.Generator, cls: int, size: int, fov=(ph.FOV_PER_R50, ph.FOV_MIN)):
        self.rng, self.cls, self.size = rng, int(cls), int(size)
        self.fov = fov  # (field of view in half-light radii, smallest field of view in arcsec)
        mu, sig, self.early = LUMINOSITY[self.cls]
        for _ in range(200):  # the visual-classification selection: resolved galaxies are kept
            self.z, self.absmag = ph.draw_redshift_and_absmag(rng, mu, sig)
            self.kpc_per_arcsec = float(ph.kpc_per_arcsec(self.z))
            self.r50 = self.r50_arcsec(self.absmag, self.early)
            r_min = MIN_R50[self.cls]
            if rng.uniform() < 1 / (1 + math.exp(-(self.r50 - r_min) / (0.15 * r_min))):
                break
        self.flux_r = float(ph.mag_to_flux(self.absmag + ph.distance_modulus(self.z)))
        self.band_flux = np.zeros(3)
        self.scene: pr.Scene | None = None
        self.truth = default_truth()
        self.truth.update(redshift=self.z, abs_mag_r=self.absmag)

    # ---- helpers -------------------------------------------------------------------------
    def u(self, lo, hi):
        return float(self.rng.uniform(lo, hi))

    def normal(self, mu, sig, lo, hi):
        return float(np.clip(self.rng.normal(mu, sig), lo, hi))

    def r50_arcsec(self, absmag: float, early: bool) -> float:
        return ph.half_light_kpc(self.rng, absmag, early) / self.kpc_per_arcsec

    def open_canvas(self, r50: float) -> pr.Canvas:
        """Choose the pixel scale from the (catalogue-measured, 8 % scatter) size; pad by size/4."""
        measured = r50 * math.exp(self.rng.normal(0, 0.08))
        scale = ph.pixel_scale(measured, self.size, *self.fov)
        pad = max(8, self.size // 4)
        canvas = pr.Canvas(self.size + 2 * pad, scale)
        self.scene = pr.Scene(canvas)
        self.truth.update(pxscale=scale, r50_arcsec=r50, r50_kpc=r50 * self.kpc_per_arcsec)
        return canvas

    def add(self, image: np.ndarray, sed: np.ndarray, flux_r: float) -> None:
        """Add a target-galaxy layer; ``flux_r`` is its model flux (for the truth magnitudes)."""
        self.scene.add(image, sed)
        self.band_flux += np.asarray(sed) * flux_r

    def sed(self, population: str) -> np.ndarray:
        return ph.sed(self.rng, population, self.z)

    # ---- components ----------------------------------------------------------------------
    def spheroid(self, centre, flux, re, n, q, pa, population="old"):
        img = pr.draw(pr.sersic(n, re, q, pa, flux), self.scene.canvas, centre)
        self.add(img, self.sed(population), flux)

    def knots(self, weight_map: np.ndarray, flux: float, k: int):
        """``k`` unresolved star-forming knots placed with probability ∝ ``weight_map``, fluxes from a
        dN/dL ∝ L^-2 luminosity function (HII regions, Kennicutt et al. 1989), summing to ``flux``."""
        if flux <= 0 or k <= 0:
            return
        canvas = self.scene.canvas
        cdf = np.cumsum(np.maximum(weight_map, 0).ravel())
        if cdf[-1] <= 0:
            return
        idx = np.minimum(np.searchsorted(cdf, self.rng.uniform(0, cdf[-1], k), side="right"), cdf.size - 1)
        x, y = canvas.xy
        jit = self.rng.uniform(-0.5, 0.5, (2, k)) * canvas.scale
        lum = 1.0 / (1.0 - self.rng.uniform(0, 0.875, k))  # Pareto(α=1): dN/dL ∝ L^-2, L in [1, 8]
        gr0, dgr, rz0, drz, sig = ph.POPULATIONS["hii"]
        gr = gr0 + dgr * self.z + self.rng.normal(0, sig, k)
        rz = rz0 + drz * self.z + self.rng.normal(0, sig, k)
        seds = np.stack([10 ** (-0.4 * gr), np.ones(k), 10 ** (0.4 * rz)], axis=1)
        fl = (lum / lum.sum() * flux)[:, None] * seds
        self.scene.add_points(x.ravel()[idx] + jit[0], y.ravel()[idx] + jit[1], fl)
        self.band_flux += fl.sum(0)

    def disk_galaxy(self, centre, flux, p: dict):
        """Bulge + bar + thick exponential disk (+ spiral arms, knots, lopsidedness, clumps, dust)."""
        canvas, rng = self.scene.canvas, self.rng
        cx, cy = centre
        bf, barf = p.get("bulge_frac", 0.0), p.get("bar_frac", 0.0)
        inc, pa, re = p["inclination"], p["pa"], p["disk_re"]
        if bf > 0:
            self.spheroid(centre, flux * bf, p["bulge_re"], p["bulge_n"], p["bulge_q"], pa)
        if barf > 0:
            img = pr.draw(pr.bar(p["bar_length"], p["bar_q"], p["bar_angle"], inc, pa, flux * barf), canvas, centre)
            self.add(img, self.sed("old"), flux * barf)
        fd = flux * (1 - bf - barf)
        dcen = (cx + p.get("disk_dx", 0.0), cy + p.get("disk_dy", 0.0))
        disk = pr.draw(pr.thick_disk(re, inc, p["h_over_r"], pa, fd), canvas, dcen)
        r, th = pr.disk_plane(canvas, dcen, pa, inc)
        total = disk.sum()
        if barf > 0:  # bars sweep up the inner disk (Freeman type II break)
            disk = disk * (1 - p.get("bar_hole", 0.0) * np.exp(-((r / p["bar_length"]) ** 2)))
        if p.get("lopsidedness", 0) > 0:
            disk = disk * (1 + p["lopsidedness"] * np.cos(th - p["lopsided_angle"]) * r / (r + 0.5 * re))
        if p.get("clumpiness", 0) > 0:
            c = p["clumpiness"]
            disk = disk * np.exp(c * pr.random_field(rng, canvas, 0.25 * re) - 0.5 * c * c)
        young = np.zeros_like(disk)
        if p.get("n_arms", 0) > 0:
            pat = pr.spiral_pattern(r, th, p["n_arms"], p["pitch"], p["arm_start"], p["arm_phase"], p["sharpness"])
            if p.get("arm_clumps", 0) > 0:
                pat = pat * np.exp(p["arm_clumps"] * pr.random_field(rng, canvas, 0.15 * re))
            env = p["arm_strength"] * pr.arm_envelope(r, p["arm_start"], 2.3 * re)
            young = disk * env * pat
            disk = disk * (1 - env)
        norm = total / max(disk.sum() + young.sum(), 1e-30)  # redistribute light, keep the disk's flux
        disk, young = disk * norm, young * norm
        kf = p.get("knot_frac", 0.0)
        src = young if young.sum() > 0 else disk
        kflux = kf * src.sum()
        self.knots(src * (r > 0.15 * re), kflux, int(rng.integers(10, 40)))
        src *= 1 - kf
        self.add(disk, self.sed(p.get("disk_population", "disk")), disk.sum())
        if young.sum() > 0:
            self.add(young, self.sed("young"), young.sum())
        if p.get("dust_tau", 0) > 0:
            lane = pr.dust_lane(canvas, dcen, pa, inc, 1.3 * re, p["dust_width"] * re, p.get("dust_side", 1.0))
            self.scene.add_dust(p["dust_tau"] * lane)
        if p.get("ring_frac", 0) > 0:
            ring = pr.ring_image(canvas, dcen, p["ring_radius"], 0.12 * p["ring_radius"], pa, inc)
            ring *= flux * p["ring_frac"] / ring.sum()
            self.add(ring, self.sed("young"), flux * p["ring_frac"])
        return {"arm_flux": float(young.sum()), "knot_flux": float(kflux)}

    def tail(self, start, flux, r50, angle0, curvature, length, population="disk"):
        """A tidal tail or plume: a curved stream of stars leaving ``start`` (Toomre & Toomre 1972)."""
        canvas = self.scene.canvas
        x, y, s = pr.curve_points(start, angle0, length, curvature, 0.4 * r50)
        w = np.exp(-s / 0.5)
        img = pr.splat(canvas, x, y, w * flux / w.sum())
        img = pr.gaussian_blur(img, max(0.18 * r50, 0.6 * canvas.scale) / canvas.scale)
        self.add(img, self.sed(population), flux)

    # ---- shared parameter blocks ------------------------------------------------------------
    def disk_params(self, r50, bt, cos_i=(0.4, 1.0), h_over_r=(0.08, 0.16)) -> dict:
        rng = self.rng
        inc = math.acos(self.u(*cos_i))
        disk_re = r50 * (1 + 0.4 * bt)
        return {"bulge_frac": bt, "bulge_n": self.normal(2.5, 0.7, 1.0, 4.5), "bulge_re": disk_re * self.u(0.1, 0.28),
                "bulge_q": self.u(0.7, 0.95), "disk_re": disk_re, "inclination": inc,
                "h_over_r": self.u(*h_over_r), "pa": float(rng.uniform(0, np.pi))}

    def spiral_params(self, p: dict, arms_p, pitch, strength, sharpness) -> dict:
        p = dict(p)
        p["n_arms"] = int(self.rng.choice([2, 3, 4], p=arms_p))
        p["pitch"] = self.normal(*pitch)
        p["arm_strength"] = self.u(*strength)
        p["sharpness"] = self.u(*sharpness)
        p["arm_start"] = max(2.0 * p["bulge_re"], 0.35 * p["disk_re"])
        p["arm_phase"] = float(self.rng.uniform(0, 2 * np.pi))
        return p

    def add_bar(self, p: dict, frac, length) -> dict:
        p = dict(p)
        p["bar_frac"] = self.u(*frac)
        p["bar_length"] = p["disk_re"] * self.u(*length)
        p["bar_q"] = self.u(0.15, 0.32)
        p["bar_angle"] = float(self.rng.uniform(0, np.pi))
        return p

    def record_disk(self, p: dict, flux: float, extra: dict) -> None:
        t = self.truth
        inc = p["inclination"]
        t.update(bulge_frac=p.get("bulge_frac", 0.0), bar_frac=p.get("bar_frac", 0.0),
                 bar_strength=p.get("bar_frac", 0.0),
                 disk_frac=1 - p.get("bulge_frac", 0.0) - p.get("bar_frac", 0.0),
                 disk_re_arcsec=p["disk_re"], disk_scale_arcsec=p["disk_re"] / 1.678, disk_h_over_r=p["h_over_r"],
                 inclination_deg=math.degrees(inc), pa_deg=math.degrees(p["pa"]) % 180,
                 axis_ratio=math.sqrt(math.cos(inc) ** 2 + (1.5 * p["h_over_r"] * math.sin(inc)) ** 2),
                 arm_frac=extra["arm_flux"] / flux, knot_frac=extra["knot_flux"] / flux,
                 clumpiness=p.get("clumpiness", 0.0), lopsidedness=p.get("lopsidedness", 0.0),
                 dust_tau_g=p.get("dust_tau", 0.0), dust_lane=p.get("dust_tau", 0.0) > 0)
        if p.get("bulge_frac", 0) > 0:
            t.update(bulge_n=p["bulge_n"], bulge_re_arcsec=p["bulge_re"], bulge_q=p["bulge_q"])
        if p.get("bar_frac", 0) > 0:
            t.update(bar_length_arcsec=p["bar_length"], bar_q=p["bar_q"],
                     bar_angle_deg=math.degrees(p["bar_angle"]) % 180)
        if p.get("n_arms", 0) > 0:
            t.update(n_arms=p["n_arms"], pitch_deg=p["pitch"], arm_strength=p["arm_strength"],
                     arm_sharpness=p["sharpness"])
        if p.get("ring_frac", 0) > 0:
            t.update(ring_radius_arcsec=p["ring_radius"])

    def record_spheroid(self, n, re, q, pa) -> None:
        self.truth.update(bulge_frac=1.0, bulge_n=n, bulge_re_arcsec=re, bulge_q=q, axis_ratio=q,
                          pa_deg=math.degrees(pa) % 180)

    def centre(self):
        """The target sits at the cutout centre within a fraction of a pixel."""
        return tuple(self.rng.normal(0, 0.25, 2) * self.scene.canvas.scale)


# --------------------------------------------------------------------------------------------
# The recipes
# --------------------------------------------------------------------------------------------
def _smooth(b: Builder, n, q, s0_prob, s0_bt, s0_inc):
    """Elliptical (de Vaucouleurs-like Sérsic) or, with ``s0_prob``, a lenticular: red bulge + red disk."""
    r50 = b.r50
    b.open_canvas(r50)
    pa = float(b.rng.uniform(0, np.pi))
    c = b.centre()
    if b.rng.uniform() < s0_prob:
        bt = b.u(*s0_bt)
        p = {"bulge_frac": bt, "bulge_n": n, "bulge_re": r50 * b.u(0.35, 0.7), "bulge_q": min(1.0, q * b.u(1.0, 1.3)),
             "disk_re": r50 * b.u(1.1, 1.6), "inclination": math.radians(b.u(*s0_inc)), "h_over_r": b.u(0.15, 0.3),
             "pa": pa, "disk_population": "old"}
        extra = b.disk_galaxy(c, b.flux_r, p)
        b.record_disk(p, b.flux_r, extra)
        b.truth.update(bulge_n=n, axis_ratio=q)
    else:
        b.spheroid(c, b.flux_r, r50, n, q, pa)
        b.record_spheroid(n, r50, q, pa)


def round_smooth(b: Builder):
    """Round ellipticals: Sérsic n≈4 (de Vaucouleurs 1948), projected q ≳ 0.6 (mostly 0.8–1)."""
    _smooth(b, b.normal(4.0, 0.7, 2.5, 6.0), float(np.clip(1 - abs(b.rng.normal(0, 0.12)), 0.6, 1.0)),
            0.0, (0, 0), (0, 0))


def in_between(b: Builder):
    """In-between round smooth: q 0.4–0.85 (overlapping round and cigar), n≈3, some S0-like disks."""
    _smooth(b, b.normal(3.2, 0.8, 1.5, 5.5), b.normal(0.62, 0.1, 0.4, 0.88), 0.3, (0.5, 0.85), (45, 65))


def cigar(b: Builder):
    """Cigar-shaped smooth: q 0.15–0.5, lower n; 40 % are lenticulars seen near edge-on."""
    _smooth(b, b.normal(2.0, 0.6, 1.0, 4.0), b.normal(0.32, 0.07, 0.15, 0.5), 0.4, (0.35, 0.7), (72, 86))


def barred_spiral(b: Builder):
    """Bulge + Sérsic n=0.5 bar (4–30 % of the light) + disk with 2–4 log-spiral arms from the bar ends."""
    bt = b.u(0.04, 0.3)
    r50 = b.r50
    b.open_canvas(r50 * (1 + 0.2 * bt))
    p = b.spiral_params(b.disk_params(r50, bt, (0.45, 1.0)), [0.75, 0.15, 0.10], (18, 6, 8, 35), (0.35, 0.75),
                        (1.5, 4.0))
    weak = b.rng.uniform() < 0.15
    p = b.add_bar(p, (0.04, 0.08) if weak else (0.1, 0.3), (0.7, 1.3))
    p["bar_hole"] = b.u(0.3, 0.5) if weak else b.u(0.5, 0.8)
    p["arm_start"] = p["bar_length"]
    p["arm_phase"] = p["n_arms"] * p["bar_angle"]
    p["knot_frac"] = b.u(0.03, 0.12)
    if b.rng.uniform() < 0.2:
        p["ring_frac"], p["ring_radius"] = b.u(0.03, 0.08), p["bar_length"] * b.u(0.95, 1.15)
    extra = b.disk_galaxy(b.centre(), b.flux_r, p)
    b.record_disk(p, b.flux_r, extra)


def tight_spiral(b: Builder):
    """Unbarred tight spiral (Sa–Sb): bigger bulge, pitch ≈ 7–24°, narrower arms, weak bar in 25 %."""
    bt = b.u(0.1, 0.45)
    r50 = b.r50
    b.open_canvas(r50 * (1 + 0.2 * bt))
    p = b.spiral_params(b.disk_params(r50, bt), [0.6, 0.2, 0.2], (14, 4, 7, 24), (0.35, 0.7), (2.0, 4.0))
    if b.rng.uniform() < 0.25:
        p = b.add_bar(p, (0.01, 0.045), (0.35, 0.7))
    p["knot_frac"] = b.u(0.02, 0.08)
    extra = b.disk_galaxy(b.centre(), b.flux_r, p)
    b.record_disk(p, b.flux_r, extra)


def loose_spiral(b: Builder):
    """Unbarred loose spiral (Sc–Sd): small or no bulge, pitch ≈ 18–42°, broad flocculent arms, knots."""
    bt = 0.0 if b.rng.uniform() < 0.3 else b.u(0.02, 0.2)
    r50 = b.r50
    b.open_canvas(r50 * (1 + 0.2 * bt))
    p = b.spiral_params(b.disk_params(r50, bt), [0.5, 0.3, 0.2], (28, 5, 18, 42), (0.4, 0.8), (1.2, 3.0))
    if b.rng.uniform() < 0.2:
        p = b.add_bar(p, (0.01, 0.045), (0.35, 0.7))
    p["knot_frac"], p["arm_clumps"] = b.u(0.06, 0.2), b.u(0.2, 0.5)
    extra = b.disk_galaxy(b.centre(), b.flux_r, p)
    b.record_disk(p, b.flux_r, extra)


def _edge_on(b: Builder, bt, inc, h_over_r, dust_prob, dust_tau, population):
    r50 = b.r50
    b.open_canvas(r50 * (1 + 0.2 * bt))
    p = b.disk_params(r50, bt, (0.0, 1.0), h_over_r)
    p.update(inclination=math.radians(b.u(*inc)), bulge_n=b.normal(2.5, 0.6, 1.5, 4.0),
             bulge_q=b.u(0.6, 0.95), bulge_re=p["disk_re"] * b.u(0.3, 0.6), knot_frac=b.u(0.0, 0.08),
             disk_population=population, dust_side=float(b.rng.choice([-1.0, 1.0])))
    if b.rng.uniform() < dust_prob:
        p["dust_tau"], p["dust_width"] = b.u(*dust_tau), b.u(0.1, 0.18)
    extra = b.disk_galaxy(b.centre(), b.flux_r, p)
    b.record_disk(p, b.flux_r, extra)


def edge_on_no_bulge(b: Builder):
    """Thin, bulgeless edge-on disk (i 82–90°, h/r 0.06–0.13), faint dust lane in 40 %."""
    bt = 0.0 if b.rng.uniform() < 0.7 else b.u(0.0, 0.04)
    _edge_on(b, bt, (82, 90), (0.06, 0.13), 0.4, (0.4, 1.5), "young" if b.rng.uniform() < 0.3 else "disk")


def edge_on_bulge(b: Builder):
    """Edge-on disk (i 79–90°) with a round Sérsic bulge (B/T 0.2–0.6) and a g-absorbing dust lane (75 %)."""
    _edge_on(b, b.u(0.2, 0.6), (79, 90), (0.07, 0.14), 0.75, (1.0, 3.0), "disk")


def disturbed(b: Builder):
    """Disturbed/irregular: lopsided (m=1), off-centre, clumpy disk with many knots; a plume in half."""
    bt = b.u(0.0, 0.25)
    r50 = b.r50
    b.open_canvas(r50 * 1.2)
    p = b.disk_params(r50, bt, (0.3, 1.0))
    ang = float(b.rng.uniform(0, 2 * np.pi))
    off = b.u(0.1, 0.4) * p["disk_re"]
    p.update(lopsidedness=b.u(0.3, 0.8), lopsided_angle=ang, disk_dx=off * math.cos(ang), disk_dy=off * math.sin(ang),
             clumpiness=b.u(0.4, 0.9), knot_frac=b.u(0.12, 0.35))
    if b.rng.uniform() < 0.3:
        p = b.spiral_params(p, [0.6, 0.3, 0.1], (28, 8, 12, 45), (0.15, 0.35), (1.0, 2.5))
    c = b.centre()
    flux = b.flux_r
    if b.rng.uniform() < 0.5:
        tf = b.u(0.03, 0.08)
        b.tail(c, flux * tf, r50, ang + b.u(-0.6, 0.6), b.u(-1.2, 1.2), r50 * b.u(1.2, 2.5))
        b.truth.update(tidal_features=True, tidal_frac=tf)
        flux *= 1 - tf
    extra = b.disk_galaxy(c, flux, p)
    b.record_disk(p, b.flux_r, extra)


def merging(b: Builder):
    """Two overlapping galaxies (flux ratio 1–4, separation 0.5–1.6 × ΣR50) with tidal tails/bridges."""
    rng = b.rng
    ratio = 10 ** b.u(0.0, 0.6)
    f1, f2 = b.flux_r * ratio / (1 + ratio), b.flux_r / (1 + ratio)
    m1, m2 = b.absmag + 2.5 * math.log10(b.flux_r / f1), b.absmag + 2.5 * math.log10(b.flux_r / f2)
    types = ["disk" if rng.uniform() < 0.6 else "elliptical" for _ in range(2)]
    r1, r2 = (b.r50_arcsec(m, t == "elliptical") for m, t in zip((m1, m2), types))
    sep = (r1 + r2) * b.u(0.5, 1.6)
    ang = float(rng.uniform(0, 2 * np.pi))
    ux, uy = math.cos(ang), math.sin(ang)
    b.open_canvas(max(r1, r2) + 0.5 * sep)
    c = b.centre()
    shift = sep * f2 / (f1 + f2) * b.u(0.3, 1.0)
    cen = [(c[0] - shift * ux, c[1] - shift * uy), (c[0] + (sep - shift) * ux, c[1] + (sep - shift) * uy)]
    tf = b.u(0.05, 0.18)
    first = None
    for k, (t, f, r, cc) in enumerate(zip(types, (f1, f2), (r1, r2), cen)):
        f_body = f * (1 - tf)
        if t == "elliptical":
            n, q, pa = b.normal(3.5, 0.7, 2.0, 5.5), b.u(0.6, 1.0), float(rng.uniform(0, np.pi))
            b.spheroid(cc, f_body, r, n, q, pa)
            if first is None:
                first = ("elliptical", n, r, q, pa)
        else:
            p = b.disk_params(r, b.u(0.0, 0.3), (0.2, 1.0))
            p.update(lopsidedness=b.u(0.2, 0.5), lopsided_angle=ang + k * np.pi, clumpiness=b.u(0.2, 0.5),
                     knot_frac=b.u(0.05, 0.2))
            extra = b.disk_galaxy(cc, f_body, p)
            if first is None:
                first = ("disk", p, f, extra)
        # tails leave each galaxy roughly away from (or towards, a bridge) its partner
        away = ang + (np.pi if k == 0 else 0.0)
        n_tails = 1 if t == "elliptical" else int(rng.integers(1, 3))
        for _ in range(n_tails):
            b.tail(cc, f * tf / n_tails, r, away + b.u(-1.2, 1.2),
                   b.u(0.6, 1.8) * rng.choice([-1, 1]), r * b.u(1.5, 3.5), "old" if t == "elliptical" else "disk")
    if first[0] == "elliptical":
        b.record_spheroid(*first[1:])
    else:
        b.record_disk(first[1], first[2], first[3])
    b.truth.update(merger_flux_ratio=ratio, merger_sep_arcsec=sep, companion_type=types[1], n_components=2,
                   tidal_features=True, tidal_frac=tf)


RECIPES = [disturbed, merging, round_smooth, in_between, cigar, barred_spiral, tight_spiral, loose_spiral,
           edge_on_no_bulge, edge_on_bulge]
assert len(RECIPES) == len(GALAXY10_CLASSES)


# --------------------------------------------------------------------------------------------
# Field: stars and neighbouring galaxies
# --------------------------------------------------------------------------------------------
def add_environment(b: Builder, stars: float = 1.0, neighbours: float = 1.0) -> None:
    """Field stars (counts ∝ 10^(0.25 m), 15 < r < 23, over the whole padded canvas so bright wings
    spill in) and neighbouring/background galaxies (∝ 10^(0.35 m), 17.5 < r < 22, small Sérsic
    profiles, within the cutout) at ``stars`` and ``neighbours`` times the high-latitude densities seen
    in DECaLS."""
    rng, canvas = b.rng, b.scene.canvas
    half = canvas.n * canvas.scale / 2
    inside = b.size * canvas.scale / 2

    def mags(k, lo, hi, slope):
        u = rng.uniform(0, 1, k)
        a, c = 10 ** (slope * lo), 10 ** (slope * hi)
        return np.log10(a + u * (c - a)) / slope

    ns = int(rng.poisson(0.7 * stars * (2 * half / ph.FOV_MIN) ** 2))
    xs, ys = rng.uniform(-half, half, (2, ns))
    gr = rng.uniform(0.3, 1.5, ns)
    ms = mags(ns, 15.0, 23.0, 0.25)
    seds = np.stack([10 ** (-0.4 * gr), np.ones(ns), 10 ** (0.4 * (0.55 * gr + rng.normal(0, 0.05, ns)))], axis=1)
    b.scene.add_points(xs, ys, seds * ph.mag_to_flux(ms)[:, None])
    star_in = (np.abs(xs) < inside) & (np.abs(ys) < inside)
    nn = int(rng.poisson(1.0 * neighbours * (2 * inside / ph.FOV_MIN) ** 2))
    xn, yn = rng.uniform(-inside, inside, (2, nn))
    for k in range(nn):
        m = float(mags(1, 17.5, 22.0, 0.35)[0])
        prof = pr.sersic(float(rng.choice([1.0, 1.5, 2.5, 4.0])), 10 ** b.u(-0.4, 0.25), b.u(0.3, 1.0),
                         float(rng.uniform(0, np.pi)), float(ph.mag_to_flux(m)))
        pop = "old" if rng.uniform() < 0.5 else "disk"
        b.scene.add(pr.draw(prof, canvas, (xn[k], yn[k])), ph.sed(rng, pop, b.u(0.1, 0.6)))
    b.truth.update(n_stars=int(star_in.sum()), has_star=bool(star_in.any()),
                   brightest_star_mag=float(ms[star_in].min()) if star_in.any() else NAN,
                   n_neighbours=nn, has_neighbour=nn > 0)


def build(rng: np.random.Generator, cls: int, size: int, fov=(ph.FOV_PER_R50, ph.FOV_MIN),
          density=(1.0, 1.0)) -> Builder:
    """Draw and render galaxy of class ``cls`` (with its field: ``density`` = (stars, neighbours)
    relative to DECaLS) on a padded canvas covering ``fov`` = (half-light radii, smallest arcsec)."""
    b = Builder(rng, cls, size, fov)
    RECIPES[cls](b)
    add_environment(b, *density)
    return b
