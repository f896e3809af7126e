"""One synthetic patient: where every organ and unlabelled structure lies, and its CT numbers.

The patient frame is in millimetres with x toward the patient's right, y anterior and z
superior (NIfTI RAS+ world axes, checked against the real AMOS label amos_0013: its liver
centroid has world x > 0). The origin is on the midline at the level of the renal hila.
Positions and sizes follow that real scan (organ centroids relative to the aorta/IVC) and
standard adult anatomy; every case jitters them (organ size ±20 %, position, rotation,
habitus, contrast phase) so models must learn shape and context, not a fixed template.

Painting order matters: later structures win. Unlabelled tissue (body wall, bowel, other
vessels) goes first, organs next (clipped to the abdominal cavity), then the vessels that
carry AMOS labels, and bone last, so an organ never overlaps the skeleton.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from amoseg.data.synth_shapes import Canvas, Ellipsoid, Tube, rotation

# Tissue classes of the phantom (uint8 codes in the tissue map).
TISSUES = (
    "air",
    "lung",
    "subq_fat",
    "visc_fat",
    "muscle",
    "bone_canc",
    "bone_cort",
    "rib",
    "disc",
    "csf",
    "bowel_wall",
    "bowel_fluid",
    "gas",
    "feces",
    "artery",
    "vein",
    "portal",
    "liver",
    "spleen",
    "kidney_cortex",
    "kidney_medulla",
    "adrenal",
    "bile",
    "esophagus",
    "stomach_wall",
    "stomach_fluid",
    "pancreas",
    "urine",
    "prostate",
    "uterus",
    "heart",
    "table",
    # appended after the original tissues so their codes (and seeded CT output) stay the same
    "cyst",
    "tumour",
    "metal",
)
T = {name: i for i, name in enumerate(TISSUES)}

# Mean HU per tissue for each contrast phase: (native, arterial, portal venous, delayed).
PHASES = ("native", "arterial", "portal", "delayed")
PHASE_WEIGHTS = (0.1, 0.2, 0.55, 0.15)
_HU = {
    "air": (-1000, -1000, -1000, -1000),
    "lung": (-850, -850, -850, -850),
    "subq_fat": (-105, -105, -105, -105),
    "visc_fat": (-95, -95, -95, -95),
    "muscle": (50, 55, 60, 58),
    "bone_canc": (230, 230, 230, 230),
    "bone_cort": (750, 750, 750, 750),
    "rib": (450, 450, 450, 450),
    "disc": (85, 85, 85, 85),
    "csf": (12, 12, 12, 12),
    "bowel_wall": (40, 80, 90, 70),
    "bowel_fluid": (15, 15, 15, 15),
    "gas": (-990, -990, -990, -990),
    "feces": (-60, -60, -60, -60),
    "artery": (42, 320, 170, 120),
    "vein": (42, 80, 150, 120),
    "portal": (42, 110, 170, 120),
    "liver": (58, 72, 115, 90),
    "spleen": (48, 105, 120, 95),
    "kidney_cortex": (32, 190, 170, 140),
    "kidney_medulla": (30, 85, 160, 150),
    "adrenal": (30, 60, 70, 55),
    "bile": (8, 8, 8, 8),
    "esophagus": (40, 60, 70, 60),
    "stomach_wall": (40, 85, 95, 70),
    "stomach_fluid": (10, 10, 10, 10),
    "pancreas": (42, 110, 95, 75),
    "urine": (8, 8, 8, 8),
    "prostate": (40, 60, 75, 65),
    "uterus": (45, 90, 110, 90),
    "heart": (40, 250, 150, 115),
    "table": (150, 150, 150, 150),
}
# Texture amplitude (HU of a smooth mottle) per tissue; overlaps the classes' histograms.
_TEXTURE = {
    "lung": 40,
    "subq_fat": 12,
    "visc_fat": 15,
    "muscle": 10,
    "bone_canc": 60,
    "bone_cort": 120,
    "rib": 90,
    "bowel_wall": 15,
    "bowel_fluid": 10,
    "feces": 180,
    "liver": 8,
    "spleen": 10,
    "kidney_cortex": 12,
    "kidney_medulla": 12,
    "adrenal": 10,
    "esophagus": 10,
    "stomach_wall": 12,
    "stomach_fluid": 8,
    "pancreas": 14,
    "prostate": 10,
    "uterus": 12,
    "heart": 15,
    "table": 30,
}

# AMOS label ids.
SPLEEN, RKID, LKID, GALL, ESO, LIVER, STOMACH, AORTA, IVC, PANC = range(1, 11)
RADR, LADR, DUOD, BLADDER, PROSTATE_UTERUS = range(11, 16)


@dataclass
class Patient:
    """Everything needed to render one case; sampled once, rendered slab by slab."""

    sex: str
    phase: str
    scale: float  # body size factor
    fat: float  # subcutaneous fat factor (habitus)
    cavity_cy: float
    z_top: float  # scan coverage in patient z (mm)
    z_bottom: float
    dome: tuple[float, float]  # diaphragm dome height right, left
    tilt: np.ndarray  # global rotation (patient position on the table)
    hu_mean: np.ndarray  # per tissue code
    hu_texture: np.ndarray
    gas_level_stomach: float
    organs: dict[str, list] = field(default_factory=dict)
    bowel: list[tuple[Tube, str]] = field(default_factory=list)
    other_vessels: list[tuple[Tube, str]] = field(default_factory=list)
    liver_vessels: list[Tube] = field(default_factory=list)
    spine_phase: float = 0.0
    rib_z0: float = 10.0

    def cavity_radii(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Half-width and half-depth (mm) of the abdominal cavity at height z."""
        s = self.scale
        pelvis = np.clip((-120 - z) / 180, 0, 1)
        chest = np.clip((z - 100) / 100, 0, 1)
        a = s * (130 - 14 * pelvis + 6 * chest)
        b = s * (92 - 14 * pelvis + 4 * chest)
        return a, b

    def body_layers(self) -> tuple[float, float, float, float]:
        """Muscle thickness and subcutaneous fat anterior/lateral/posterior (mm)."""
        return 12 * self.scale, 8 + 45 * self.fat, 6 + 40 * self.fat, 4 + 22 * self.fat


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _n(rng: np.random.Generator, sd: float) -> float:
    return float(np.clip(rng.normal(0, sd), -2.5 * sd, 2.5 * sd))


def _ellipsoid(rng, center, radii, rot_deg, size, rough=0.08, jit=6.0, rot_jit=8.0):
    c = np.asarray(center, float) + np.array([_n(rng, jit) for _ in range(3)])
    r = np.asarray(radii, float) * size * np.exp(rng.normal(0, 0.05, 3))
    angles = np.asarray(rot_deg, float) + np.array([_n(rng, rot_jit) for _ in range(3)])
    return Ellipsoid(c, r, rotation(*angles), rough)


def _tube(rng, points, radii, size=1.0, rough=0.06, jit=4.0, shift=5.0):
    p = np.asarray(points, float)
    c = p.mean(axis=0)
    p = c + (p - c) * np.sqrt(size)  # the path stretches less than the calibre
    p = p + rng.normal(0, jit, p.shape).clip(-2 * jit, 2 * jit)
    p = p + np.array([_n(rng, shift) for _ in range(3)])
    r = np.asarray(radii, float) * size * np.exp(rng.normal(0, 0.06, len(radii)))
    return Tube(p, r, rough)


def _random_walk(rng, start, n, step, lo, hi, radius) -> Tube:
    pts = [np.asarray(start, float)]
    direction = rng.normal(size=3)
    for _ in range(n - 1):
        direction = direction / np.linalg.norm(direction) + rng.normal(0, 0.8, 3)
        direction = direction / np.linalg.norm(direction)
        nxt = pts[-1] + step * direction
        for k in range(3):  # bounce off the region's walls
            if not lo[k] <= nxt[k] <= hi[k]:
                direction[k] *= -1
                nxt[k] = np.clip(nxt[k], lo[k], hi[k])
        pts.append(nxt)
    radii = radius * np.exp(rng.normal(0, 0.12, n))
    return Tube(np.array(pts), radii, rough=0.1)


def sample_patient(rng: np.random.Generator, z_range: tuple[float, float] | None = None) -> Patient:
    """Draw one patient: body, organs, bowel and vessels, contrast phase, scan coverage."""
    s = _u(rng, 0.9, 1.1)
    fat = float(rng.beta(2.0, 2.5)) * 1.1 + 0.05
    sex = "female" if rng.random() < 0.5 else "male"
    phase = PHASES[int(rng.choice(len(PHASES), p=PHASE_WEIGHTS))]
    if z_range is None:
        z_top = _u(rng, 115, 175)
        z_bottom = _u(rng, -310, -255) if rng.random() < 0.85 else _u(rng, -200, -140)
    else:
        z_bottom, z_top = z_range
    strength = _u(rng, 0.7, 1.3)  # how much contrast reached the tissues
    mean = np.zeros(len(TISSUES), np.float32)
    tex = np.zeros(len(TISSUES), np.float32)
    pi = PHASES.index(phase)
    for name, values in _HU.items():
        native, enhanced = values[0], values[pi]
        mean[T[name]] = native + strength * (enhanced - native) + _n(rng, 6)
        tex[T[name]] = _TEXTURE.get(name, 0.0)
    if rng.random() < 0.25:  # positive oral contrast in the bowel
        mean[T["bowel_fluid"]] = _u(rng, 150, 400)
    p = Patient(
        sex=sex,
        phase=phase,
        scale=s,
        fat=fat,
        cavity_cy=-15.0,
        z_top=z_top,
        z_bottom=z_bottom,
        dome=(150 + _n(rng, 10), 140 + _n(rng, 10)),
        tilt=rotation(_n(rng, 2.0), _n(rng, 1.0), _n(rng, 3.0)),
        hu_mean=mean,
        hu_texture=tex,
        gas_level_stomach=_u(rng, 5, 70),
        spine_phase=_u(rng, 0, 38),
        rib_z0=_u(rng, 0, 25),
    )
    dz = _n(rng, 8)  # breathing: upper-abdominal organs move together
    size = {k: _u(rng, 0.8, 1.2) for k in ("liver", "spleen", "kid", "stomach", "panc", "gb")}
    o = p.organs
    o["liver"] = [
        _ellipsoid(rng, (62 * s, -12, 82 + dz), (62, 72, 82), (0, 0, 10), size["liver"], 0.06),
        _ellipsoid(rng, (-12 * s, 28, 98 + dz), (55, 30, 38), (0, 10, -15), size["liver"], 0.08),
        _ellipsoid(rng, (20 * s, -20, 95 + dz), (22, 20, 30), (0, 0, 0), size["liver"], 0.08),
    ]
    o["spleen"] = [
        _ellipsoid(rng, (-84 * s, -44, 72 + dz), (24, 56, 50), (5, 0, -35), size["spleen"])
    ]
    ks = size["kid"]
    for key, x, z, rz in (("rkid", 58, -5, 25), ("lkid", -60, 8, -25)):
        k = _ellipsoid(
            rng, (x * s, -54, z + 0.5 * dz), (26, 24, 54), (12, -np.sign(x) * 12, rz), ks
        )
        medial = -np.sign(x)
        hilum = Ellipsoid(
            k.center + k.rot @ np.array([medial * 16.0, 6.0, 0.0]),
            np.array([10.0, 9.0, 18.0]) * ks,
            k.rot,
            0.1,
        )
        o[key] = [k, hilum]
    o["radr"] = [
        _ellipsoid(rng, (30 * s, -36, 55 + dz), (3.2, 11, 15), (0, 0, 30), 1.0, 0.1, 3, 8),
        _ellipsoid(rng, (36 * s, -44, 50 + dz), (3.2, 10, 14), (0, 0, -20), 1.0, 0.1, 3, 8),
    ]
    o["ladr"] = [
        _ellipsoid(rng, (-32 * s, -33, 42 + dz), (3.2, 11, 15), (0, 0, -30), 1.0, 0.1, 3, 8),
        _ellipsoid(rng, (-38 * s, -42, 38 + dz), (3.2, 10, 14), (0, 0, 20), 1.0, 0.1, 3, 8),
    ]
    gb = size["gb"]
    o["gall"] = [_ellipsoid(rng, (55 * s, 8, 28 + dz), (13, 14, 30), (-35, 15, 0), gb, 0.06)]
    st = size["stomach"]
    o["stomach"] = [
        _tube(
            rng,
            [
                (-58, -22, 118),
                (-62, 0, 88),
                (-50, 20, 58),
                (-15, 38, 38),
                (10, 30, 33),
                (22, 18, 33),
            ],
            [33, 36, 30, 21, 14, 9],
            st,
            0.08,
        )
    ]
    for t in o["stomach"]:
        t.points[:, 2] += dz
    o["esophagus"] = [
        _tube(rng, [(-4, -20, 260), (-8, -16, 135), (-24, -6, 108), (-40, -2, 98)], [8, 8, 8, 9])
    ]
    pc = size["panc"]
    o["pancreas"] = [
        _tube(
            rng,
            [(30, -10, 12), (8, 2, 24), (-20, 4, 34), (-50, -20, 45), (-68, -30, 52)],
            [15, 10, 9.5, 8.5, 7],
            pc,
            0.1,
        )
    ]
    o["duodenum"] = [
        _tube(
            rng,
            [
                (22, 18, 33),
                (40, 4, 30),
                (52, -10, 18),
                (55, -14, -8),
                (45, -16, -30),
                (15, 6, -40),
                (-15, 6, -38),
                (-28, 0, -22),
                (-35, 4, -8),
            ],
            [9, 10, 9, 9, 9, 8, 8, 8, 8],
            _u(rng, 0.8, 1.2),
            0.1,
        )
    ]
    fill = _u(rng, 0.8, 1.3)
    o["bladder"] = [_ellipsoid(rng, (0, 12, -212), (36, 30, 28), (0, 0, 0), fill, 0.06)]
    if sex == "male":
        o["prostate_uterus"] = [
            _ellipsoid(rng, (0, -2, -248), (22, 17, 19), (-15, 0, 0), _u(rng, 0.9, 1.25), 0.05)
        ]
    else:
        o["prostate_uterus"] = [
            _ellipsoid(rng, (0, -32, -188), (30, 22, 36), (-40, 0, _n(rng, 10)), _u(rng, 0.85, 1.2))
        ]
    o["aorta"] = [
        _tube(
            rng,
            [(-12, -18, 300), (-12, -14, 100), (-10, -9, -20), (-8, -4, -95)],
            [12, 11, 10, 9],
            _u(rng, 0.9, 1.15),
            0.03,
            2,
            3,
        )
    ]
    o["ivc"] = [
        _tube(
            rng,
            [(16, -10, 300), (20, -14, 110), (20, -16, 30), (17, -12, -92)],
            [13, 12, 11, 10],
            _u(rng, 0.9, 1.15),
            0.05,
            2,
            3,
        )
    ]
    _bowel(rng, p)
    _vessels(rng, p)
    return p


def _bowel(rng: np.random.Generator, p: Patient) -> None:
    """Colon frame and small-bowel loops: unlabelled gut that looks like duodenum/stomach."""
    colon = _tube(
        rng,
        [
            (95, -5, -150),
            (98, -8, -40),
            (92, 0, 15),
            (70, 30, 28),
            (35, 55, 18),
            (-10, 58, 22),
            (-50, 50, 40),
            (-85, 5, 62),
            (-98, -20, 10),
            (-98, -18, -110),
            (-70, 20, -180),
            (-25, 5, -205),
            (0, -60, -225),
            (0, -72, -320),
        ],
        [24, 22, 22, 20, 20, 20, 20, 20, 18, 18, 16, 16, 18, 16],
        1.0,
        0.15,
        6,
        6,
    )
    p.bowel.append((colon, "colon"))
    for _ in range(int(rng.integers(6, 10))):
        start = (_u(rng, -70, 70), _u(rng, -10, 60), _u(rng, -190, -20))
        loop = _random_walk(
            rng, start, int(rng.integers(8, 14)), 16.0, (-90, -30, -200), (90, 75, -5), 11.0
        )
        p.bowel.append((loop, "small"))


def _vessels(rng: np.random.Generator, p: Patient) -> None:
    """Unlabelled vessels (background in AMOS) and vessels inside the liver (labelled liver)."""

    def v(points, radii, kind):
        p.other_vessels.append((_tube(rng, points, radii, 1.0, 0.05, 2, 3), kind))

    for side in (1, -1):
        v(
            [(-8, -4, -95), (side * 40, -2, -165), (side * 75, 15, -250), (side * 80, 25, -320)],
            [6.5, 6, 5, 5],
            "artery",
        )
        v(
            [(17, -12, -92), (side * 40, -14, -165), (side * 72, 8, -250), (side * 78, 18, -320)],
            [8, 7.5, 7, 7],
            "vein",
        )
        v([(-10, -12, 2), (side * 55, -40, -2)], [3, 3], "artery")  # renal arteries
    v([(-50, -42, 5), (-30, -8, 8), (-10, 2, 8), (18, -10, 5)], [5.5, 5.5, 5, 5], "vein")
    v([(50, -45, -3), (20, -14, 0)], [5.5, 5.5], "vein")
    v([(-10, -6, 32), (-4, 12, 10), (0, 24, -30), (5, 30, -80)], [4, 4, 3.5, 3], "artery")  # SMA
    v([(10, 2, 22), (14, 16, 0), (16, 28, -40), (20, 34, -90)], [6, 6, 5, 4], "portal")  # SMV
    v([(10, -8, 24), (-20, -8, 34), (-50, -28, 45), (-72, -38, 55)], [5, 5, 4.5, 4], "portal")
    v([(10, -8, 24), (30, -4, 40), (45, 0, 58)], [7, 7, 6.5], "portal")  # portal vein
    v([(-11, -8, 45), (-14, 0, 52), (-25, 8, 58)], [3, 3, 3], "artery")  # coeliac trunk
    v([(-10, 80, 200), (-25, 40, 185), (-20, 20, 300)], [45, 40, 20], "heart")
    for end in ((75, 15, 120), (10, 35, 125), (85, -35, 105), (55, 30, 85), (35, -30, 70)):
        p.liver_vessels.append(_tube(rng, [(20, -16, 135), end], [6, 3], 1.0, 0.1, 3, 3))


# -- rendering ---------------------------------------------------------------------------


def render(p: Patient, cv: Canvas) -> None:
    """Paint the patient into the canvas's tissue and label maps (in place)."""
    X, Y, Z = cv.P
    a, b = p.cavity_radii(Z)
    cy = p.cavity_cy
    muscle, t_ant, t_lat, t_post = p.body_layers()
    rho2 = (X / a) ** 2 + ((Y - cy) / b) ** 2
    # body: subcutaneous fat around a muscle wall around the cavity (visceral fat)
    oa = a + muscle + t_lat
    ob = b + muscle + (t_ant + t_post) / 2
    ocy = cy + (t_ant - t_post) / 2
    body = (X / oa) ** 2 + ((Y - ocy) / ob) ** 2 < 1
    wall = (X / (a + muscle)) ** 2 + ((Y - cy) / (b + muscle)) ** 2 < 1
    cavity = rho2 < 1
    table_y = ocy - ob - 8
    cv.tissue[(np.abs(Y - table_y) < 5) & (np.abs(X) < 230)] = T["table"]
    cv.tissue[body] = T["subq_fat"]
    cv.tissue[wall] = T["muscle"]
    cv.tissue[cavity] = T["visc_fat"]
    lung = cavity & (_dome(p, X, Y) < Z)
    cv.tissue[lung] = T["lung"]
    del body, wall
    _paint_muscles(p, cv)
    for tube, kind in p.bowel:
        _paint_gut(p, cv, tube, None, kind, cavity)
    for tube, kind in p.other_vessels:
        hit = cv.tube(tube)
        if hit is not None:
            blk, m = hit
            cv.paint(blk, m & cavity[blk], T[kind] if kind in T else T["vein"], 0)
    _paint_organs(p, cv, cavity, lung)
    _paint_bones(p, cv)
    _paint_pelvis(p, cv)


def _dome(p: Patient, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Height of the diaphragm over (x, y): two domes, lower toward the posterior recesses."""
    right = p.dome[0] - 0.006 * ((X - 65 * p.scale) ** 2 + 1.2 * (Y + 10) ** 2)
    left = p.dome[1] - 0.006 * ((X + 65 * p.scale) ** 2 + 1.2 * (Y + 10) ** 2)
    return np.maximum(np.maximum(right, left), 95 - 0.3 * np.clip(Y + 40, 0, None))


def _paint_muscles(p: Patient, cv: Canvas) -> None:
    s = p.scale
    for side in (1, -1):
        psoas = Tube(
            np.array(
                [
                    (side * 24, -45, 40),
                    (side * 38, -45, -60),
                    (side * 55, -35, -150),
                    (side * 68, -10, -230),
                ]
            )
            * [s, 1, 1],
            np.array([6, 18, 22, 18]) * s,
            0.06,
        )
        para = Tube(
            np.array([(side * 35 * s, -88 * s, 300), (side * 35 * s, -90 * s, -170)]),
            np.array([27.0, 24.0]) * s,
            0.05,
        )
        for t in (psoas, para):
            hit = cv.tube(t)
            if hit is not None:
                cv.paint(*hit, T["muscle"], 0)


def _paint_gut(p: Patient, cv: Canvas, tube: Tube, label, kind, clip) -> None:
    """Gut: wall plus contents; gas floats anteriorly (patient supine)."""
    hit = cv.tube(tube)
    if hit is None:
        return
    blk, outer = hit
    outer &= clip[blk]
    _, inner = cv.tube(tube, offset=-3.0, blk=blk)
    inner &= outer
    cv.paint(blk, outer, T["bowel_wall"], label)
    Y = cv.P[1][blk]
    r = cv.rough[blk]
    if kind == "colon":
        contents = np.where(r > 0.3, T["feces"], T["gas"]).astype(np.uint8)
    else:
        level = float(np.median(tube.points[:, 1])) + 8
        contents = np.where((level < Y) & (r > 0.5), T["gas"], T["bowel_fluid"]).astype(np.uint8)
    cv.tissue[blk][inner] = contents[inner]


def _clip(cv: Canvas, hit, cavity, above: np.ndarray | None = None):
    if hit is None:
        return None
    blk, m = hit
    m &= cavity[blk]
    if above is not None:
        m &= ~above[blk]
    return blk, m


def _paint_organs(p: Patient, cv: Canvas, cavity: np.ndarray, lung: np.ndarray) -> None:
    o = p.organs
    for e in o["liver"]:
        hit = _clip(cv, cv.ellipsoid(e), cavity, lung)
        if hit:
            cv.paint(*hit, T["liver"], LIVER)
    for t in p.liver_vessels:
        hit = cv.tube(t)
        if hit:
            blk, m = hit
            cv.paint(blk, m & (cv.label[blk] == LIVER), T["vein"])
    # stomach: wall, fluid below and gas above the air-fluid level
    tube = o["stomach"][0]
    hit = _clip(cv, cv.tube(tube), cavity, lung)
    if hit:
        blk, outer = hit
        _, inner = cv.tube(tube, offset=-4.0, blk=blk)
        inner &= outer
        cv.paint(blk, outer, T["stomach_wall"], STOMACH)
        gas = inner & (cv.P[1][blk] > p.gas_level_stomach)
        cv.paint(blk, inner & ~gas, T["stomach_fluid"])
        cv.paint(blk, gas, T["gas"])
    for e in o["spleen"]:
        hit = _clip(cv, cv.ellipsoid(e), cavity, lung)
        if hit:
            cv.paint(*hit, T["spleen"], SPLEEN)
    for key, lab in (("rkid", RKID), ("lkid", LKID)):
        kid, hilum = o[key]
        hit = _clip(cv, cv.ellipsoid(kid), cavity)
        if hit is None:
            continue
        blk, m = hit
        cv.paint(blk, m, T["kidney_cortex"], lab)
        medulla = m & (cv.ellipsoid_q(kid, blk) < 0.55**2)
        cv.paint(blk, medulla, T["kidney_medulla"])
        sinus = cv.ellipsoid(hilum)
        if sinus:
            sblk, sm = sinus
            cv.paint(sblk, sm & (cv.label[sblk] == lab), T["visc_fat"], 0)
    for key, lab in (("radr", RADR), ("ladr", LADR)):
        for e in o[key]:
            hit = _clip(cv, cv.ellipsoid(e), cavity)
            if hit:
                cv.paint(*hit, T["adrenal"], lab)
    hit = _clip(cv, cv.tube(o["pancreas"][0]), cavity)
    if hit:
        cv.paint(*hit, T["pancreas"], PANC)
    _paint_gut(p, cv, o["duodenum"][0], DUOD, "small", cavity)
    hit = _clip(cv, cv.ellipsoid(o["gall"][0]), cavity)
    if hit:
        cv.paint(*hit, T["bile"], GALL)
    hit = _clip(cv, cv.ellipsoid(o["bladder"][0]), cavity)
    if hit:
        cv.paint(*hit, T["urine"], BLADDER)
    tissue = T["prostate"] if p.sex == "male" else T["uterus"]
    hit = _clip(cv, cv.ellipsoid(o["prostate_uterus"][0]), cavity)
    if hit:
        cv.paint(*hit, tissue, PROSTATE_UTERUS)
    gej = o["esophagus"][0].points[-1, 2]
    hit = cv.tube(o["esophagus"][0])
    if hit:
        blk, m = hit
        cv.paint(blk, m & (cv.P[2][blk] > gej + 5), T["esophagus"], ESO)
    for key, lab, tissue in (("ivc", IVC, T["vein"]), ("aorta", AORTA, T["artery"])):
        hit = cv.tube(o[key][0])
        if hit:
            cv.paint(*hit, tissue, lab)


def _paint_bones(p: Patient, cv: Canvas) -> None:
    """Vertebrae with discs and canal, ribs in the wall, pelvis; all background."""
    s = p.scale
    blk = cv.block((-60 * s, -150 * s, -1e4), (60 * s, 10, 1e4))
    if blk is not None:
        _paint_spine(p, cv, blk)
    blk = cv.block((-1e4, -1e4, p.rib_z0 - 60), (1e4, 1e4, p.rib_z0 + 26 * 7 + 10))
    if blk is not None:
        # ribs: bands in the body wall that descend anteriorly, longer higher up
        X, Y, Z = cv.coords(blk)
        a, b = p.cavity_radii(Z)
        rho = np.sqrt((X / a) ** 2 + ((Y - p.cavity_cy) / b) ** 2)
        band = (np.abs(rho - 1.05) * (a + b) / 2 < 5.5) & (np.abs(X) > 25 * s)
        idx = np.nonzero(band)
        x, y, z, rb = X[idx], Y[idx], Z[idx], rho[idx]
        sin_t = (y - p.cavity_cy) / (b[idx] * np.maximum(rb, 1e-3))
        rib = np.zeros(x.shape, bool)
        for k in range(8):
            zk = p.rib_z0 + 26 * k - 45 * (1 + sin_t) / 2
            rib |= (np.abs(z - zk) < 5.5) & (sin_t < min(-0.4 + 0.22 * k, 0.75))
        sel = tuple(i[rib] for i in idx)
        cv.tissue[blk][sel] = T["rib"]
        cv.label[blk][sel] = 0


def _paint_spine(p: Patient, cv: Canvas, blk) -> None:
    X, Y, Z = cv.coords(blk)
    s = p.scale
    level = np.mod(Z - p.spine_phase, 38.0)  # vertebra + disc period
    vertebra = level > 8
    above_sacrum = Z > -150
    vy = -45 * s
    ra = np.where(Z > 120, 15.0, 21.0) * s
    rb = np.where(Z > 120, 13.0, 16.0) * s
    q = (X / ra) ** 2 + ((Y - vy) / rb) ** 2
    body = (q < 1) & above_sacrum
    tissue = cv.tissue[blk]
    tissue[body & ~vertebra] = T["disc"]
    tissue[body & vertebra] = T["bone_canc"]
    tissue[body & vertebra & (q > 0.72)] = T["bone_cort"]
    canal_y = vy - rb - 9
    rc = np.sqrt(X**2 + (Y - canal_y) ** 2)
    arch = (rc > 8.5) & (rc < 14) & vertebra & (vy - rb * 0.5 > Y)
    spinous = (np.abs(X) < 4) & (canal_y - 10 > Y) & (canal_y - 38 < Y) & (level > 14)
    transverse = (np.abs(Y - canal_y - 4) < 5) & (np.abs(X) < 48 * s) & (level > 20) & (Z < 110)
    bone = (arch | spinous | transverse) & above_sacrum & ~body
    tissue[bone] = T["bone_cort"]
    tissue[(rc <= 8.5) & above_sacrum] = T["csf"]
    cv.label[blk][body | bone] = 0


def _paint_pelvis(p: Patient, cv: Canvas) -> None:
    s = p.scale
    # pelvis: iliac wings, sacrum, femoral heads, pubic rami
    shapes = [
        Ellipsoid(np.array([0, -80 * s, -190.0]), np.array([45, 16, 55.0]) * s, rotation(35), 0),
    ]
    for side in (1, -1):
        shapes.append(
            Ellipsoid(
                np.array([side * 88 * s, -10, -282.0]), np.array([24, 24, 24.0]) * s, np.eye(3), 0
            )
        )
    for e in shapes:
        hit = cv.ellipsoid(e)
        if hit:
            blk, m = hit
            cv.paint(blk, m, T["bone_canc"], 0)
            q = cv.ellipsoid_q(e, blk)
            cv.paint(blk, m & (q > 0.75), T["bone_cort"])
    for side in (1, -1):
        # iliac wing: a curved plate from the sacroiliac joint out to the anterior spine
        wing = Ellipsoid(
            np.array([side * 82 * s, -35, -178.0]),
            np.array([62, 8, 48.0]) * s,
            rotation(0, 0, 50 if side > 0 else 130),
            0.05,
        )
        hit = cv.ellipsoid(wing)
        if hit:
            blk, m = hit
            cv.paint(blk, m, T["bone_canc"], 0)
            cv.paint(blk, m & (cv.ellipsoid_q(wing, blk) > 0.45), T["bone_cort"])
        ramus = Tube(
            np.array([(side * 85 * s, 0, -272.0), (side * 15 * s, 55 * s, -285.0)]),
            np.array([10.0, 9.0]),
            0,
        )
        hit = cv.tube(ramus)
        if hit:
            cv.paint(*hit, T["bone_cort"], 0)
