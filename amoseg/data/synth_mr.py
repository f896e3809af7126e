"""MR contrast for the synthetic abdomen: the CT phantom's tissue map seen by an MR scanner.

The same tissue map that `synth` turns into HU is turned into MR signal from each tissue's
relaxation times through textbook signal equations, so the contrast between organs follows
published relative values; the absolute scale is arbitrary (MR has none) and drawn per scan.

Sequences (one per scan):
- ``t1_in`` / ``t1_opp``: 3D spoiled gradient echo (VIBE-like) at the in-phase / opposed-phase
  echo time; water and fat are rendered as separate signals and added (in phase) or
  subtracted (opposed phase) *after* partial-volume blurring, so fatty liver darkens and
  fat/water boundaries show the opposed-phase "India-ink" line;
- ``t1_fs_portal``: the same GRE with fat suppression after gadolinium (portal venous), the
  contrast uptake taken from the CT phantom's own portal-phase enhancement;
- ``t2_haste``: single-shot turbo spin echo (HASTE-like, long TR, TE_eff 60-100 ms): fluid
  bright, muscle dark, flowing blood black.

Then a smooth multiplicative bias field (coil sensitivity) and Rician noise (the magnitude of
complex Gaussian noise), rescaled to non-negative int16 with a random scale.

Relaxation times (ms, at 1.5 T and 3 T) of liver, spleen, pancreas, renal cortex and medulla,
skeletal muscle, subcutaneous fat, bone marrow, prostate and uterus (myometrium):
de Bazelaire C, Duhamel GD, Rofsky NM, Alsop DC. "MR imaging relaxation times of abdominal and
pelvic tissues measured in vivo at 3.0 T: preliminary results." Radiology 2004;230:652-659.
Blood: Stanisz GJ et al. "T1, T2 relaxation and magnetization transfer in tissue at 3T."
Magn Reson Med 2005;54:507-512 (and its 1.5 T values). Fluids (bile, urine, CSF, bowel
fluid), cortical bone, gas, adrenal, gut wall, disc and feces are rounded textbook values
marked "approx." below; proton densities are approximate water (or fat) contents. Fat's longer
apparent T2 in turbo spin echo (J-coupling; Henkelman RM et al., JMRI 1992;2:533-540) is why
fat is bright on HASTE. Every value is jittered per scan; none is a measured absolute signal.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from amoseg.data.synth_anatomy import _HU, PHASES, TISSUES, Patient, T

SEQUENCES = ("t1_in", "t1_opp", "t1_fs_portal", "t2_haste")
SEQUENCE_WEIGHTS = (0.3, 0.2, 0.2, 0.3)

# tissue: (proton density, T1 1.5 T, T2 1.5 T, T1 3 T, T2 3 T, fat fraction). ms.
_MR: dict[str, tuple[float, float, float, float, float, float]] = {
    "air": (0.0, 1000, 1, 1000, 1, 0.0),
    "lung": (0.04, 1200, 30, 1300, 25, 0.0),  # approx.; T2* makes it dark on GRE too
    "subq_fat": (0.95, 343, 58, 382, 68, 0.95),  # de Bazelaire 2004
    "visc_fat": (0.95, 343, 58, 382, 68, 0.9),
    "muscle": (0.72, 856, 27, 898, 29, 0.0),  # de Bazelaire 2004 (paraspinal)
    "bone_canc": (0.75, 549, 49, 586, 49, 0.4),  # de Bazelaire 2004 (vertebral marrow)
    "bone_cort": (0.05, 1000, 1, 1000, 1, 0.0),  # approx.: signal void
    "rib": (0.3, 549, 40, 586, 40, 0.3),  # approx.: thin cortex around marrow
    "disc": (0.8, 1100, 90, 1200, 80, 0.0),  # approx.
    "csf": (1.0, 4000, 2000, 4200, 1800, 0.0),  # approx.
    "bowel_wall": (0.75, 900, 45, 1000, 40, 0.0),  # approx.
    "bowel_fluid": (1.0, 3000, 1000, 3200, 900, 0.0),  # approx. (water-like)
    "gas": (0.0, 1000, 1, 1000, 1, 0.0),
    "feces": (0.55, 800, 50, 900, 45, 0.1),  # approx.
    "artery": (0.85, 1441, 290, 1932, 275, 0.0),  # Stanisz 2005 (blood)
    "vein": (0.85, 1441, 290, 1932, 275, 0.0),
    "portal": (0.85, 1441, 290, 1932, 275, 0.0),
    "liver": (0.71, 586, 46, 809, 34, 0.0),  # de Bazelaire 2004; fat fraction drawn per scan
    "spleen": (0.79, 1057, 79, 1328, 61, 0.0),  # de Bazelaire 2004
    "kidney_cortex": (0.81, 966, 87, 1142, 76, 0.0),  # de Bazelaire 2004
    "kidney_medulla": (0.83, 1412, 85, 1545, 81, 0.0),  # de Bazelaire 2004
    "adrenal": (0.75, 800, 60, 950, 50, 0.05),  # approx.
    "bile": (1.0, 2500, 700, 2700, 600, 0.0),  # approx. (bright on T2: MRCP)
    "esophagus": (0.75, 900, 45, 1000, 40, 0.0),  # approx. (gut wall)
    "stomach_wall": (0.75, 900, 45, 1000, 40, 0.0),  # approx.
    "stomach_fluid": (1.0, 3000, 900, 3200, 800, 0.0),  # approx.
    "pancreas": (0.72, 584, 46, 725, 43, 0.0),  # de Bazelaire 2004
    "urine": (1.0, 3000, 1500, 3200, 1300, 0.0),  # approx.
    "prostate": (0.8, 1317, 88, 1597, 74, 0.0),  # de Bazelaire 2004
    "uterus": (0.8, 1309, 117, 1514, 79, 0.0),  # de Bazelaire 2004 (myometrium)
    "heart": (0.82, 1200, 120, 1500, 100, 0.0),  # approx. (myocardium + blood pool)
    "table": (0.0, 1000, 1, 1000, 1, 0.0),  # the MR table gives no signal
    "cyst": (1.0, 3000, 1200, 3200, 1000, 0.0),  # approx. (simple fluid)
    "tumour": (0.8, 1100, 85, 1300, 75, 0.0),  # approx. (T1 and T2 longer than liver)
    "metal": (0.0, 1000, 1, 1000, 1, 0.0),  # signal void
}
FLOWING = ("artery", "vein", "portal")
#: apparent T2 (ms) of fat in a turbo spin echo train (J-coupling), 1.5 T / 3 T; approx.
FAT_T2_TSE = (130.0, 120.0)
#: relaxivity-like constant turning the CT phantom's portal enhancement (HU) into ΔR1 (1/s):
#: a 57 HU liver enhancement → ΔR1 ≈ 1.1 /s (liver T1 ≈ 586 → ≈ 350 ms). Approx.
DR1_PER_HU = 0.02


@dataclass
class MrProtocol:
    """What one MR scan's contrast is made of: per-tissue water/fat signals and the noise."""

    sequence: str
    field_t: float
    water: np.ndarray  # per tissue code, relative signal
    fat: np.ndarray
    texture: np.ndarray  # relative mottle amplitude per tissue
    noise_sigma: float  # Rician sigma, in the same relative units
    bias_sd: float  # log-amplitude of the smooth bias field
    scale: float  # relative signal → stored integer

    @property
    def opposed(self) -> bool:
        return self.sequence == "t1_opp"


def sample_protocol(p: Patient, rng: np.random.Generator) -> MrProtocol:
    """Draw a sequence, a field strength and every tissue's signal for one scan."""
    sequence = SEQUENCES[int(rng.choice(len(SEQUENCES), p=SEQUENCE_WEIGHTS))]
    three_t = rng.random() < 0.4
    field_t = 3.0 if three_t else 1.5
    n = len(TISSUES)
    water, fat, texture = np.zeros(n), np.zeros(n), np.zeros(n)
    liver_fat = float(rng.choice([0.0, rng.uniform(0.02, 0.25)], p=[0.7, 0.3]))  # steatosis
    portal = PHASES.index("portal")
    flip = np.deg2rad(rng.uniform(9, 15))
    tr = rng.uniform(3.5, 5.5)
    te_eff = rng.uniform(60, 100)
    for name, (pd, t1a, t2a, t1b, t2b, ff) in _MR.items():
        k = T[name]
        t1 = (t1b if three_t else t1a) * float(np.exp(rng.normal(0, 0.08)))
        t2 = (t2b if three_t else t2a) * float(np.exp(rng.normal(0, 0.08)))
        if name == "liver":
            ff = liver_fat
        pd_w, pd_f = pd * (1 - ff), pd * ff
        fat_t1 = _MR["subq_fat"][3 if three_t else 1]
        if sequence == "t2_haste":
            fat_t2 = FAT_T2_TSE[1 if three_t else 0]
            water[k] = pd_w * np.exp(-te_eff / t2)
            fat[k] = pd_f * np.exp(-te_eff / fat_t2)
            if name in FLOWING:
                water[k] *= rng.uniform(0.03, 0.2)  # flow void
        else:
            r1 = 1000.0 / t1
            if sequence == "t1_fs_portal" and name in _HU:
                native, enhanced = _HU[name][0], _HU[name][portal]
                r1 += DR1_PER_HU * max(0.0, enhanced - native)
            water[k] = pd_w * _spoiled_gre(r1, tr, flip)
            fat[k] = pd_f * _spoiled_gre(1000.0 / fat_t1, tr, flip)
            if sequence == "t1_fs_portal":
                fat[k] *= rng.uniform(0.05, 0.15)  # fat saturation leaves a little
        texture[k] = 0.35 if name == "feces" else 0.05 if pd > 0.3 else 0.0
    # reference: the brightest large soft tissue, so SNR and scale mean the same in every scan
    ref = float(max(water[T["liver"]] + fat[T["liver"]], water[T["muscle"]], 1e-6))
    snr = rng.uniform(12, 40)
    bright = float((water + fat).max())
    return MrProtocol(
        sequence=sequence,
        field_t=field_t,
        water=water,
        fat=fat,
        texture=texture,
        noise_sigma=ref / snr,
        bias_sd=float(rng.uniform(0.08, 0.3)),
        scale=float(rng.uniform(500, 2500)) / bright,
    )


def _spoiled_gre(r1: float, tr: float, flip: float) -> float:
    """Steady-state spoiled gradient echo signal (Ernst equation) per unit proton density."""
    e1 = np.exp(-tr * r1 / 1000.0)
    return float(np.sin(flip) * (1 - e1) / (1 - np.cos(flip) * e1))


def mr_signal(
    proto: MrProtocol,
    tissue: np.ndarray,
    rng: np.random.Generator,
    spacing: tuple[float, float, float],
    bias: np.ndarray,
) -> np.ndarray:
    """Tissue map → non-negative int16 MR magnitude image (one slab).

    `bias` is the smooth log bias field on the slab's voxels (patient-fixed, so slabs join).
    """
    sxy, _, dz = spacing
    tex = rng.standard_normal(tissue.shape, dtype=np.float32)
    tex = ndimage.gaussian_filter(tex, sigma=(max(0.7, 3 / sxy),) * 2 + (max(0.5, 3 / dz),))
    tex /= max(float(tex.std()), 1e-6)
    mottle = 1 + proto.texture[tissue].astype(np.float32) * tex
    del tex
    pv = (max(0.45, 0.8 / sxy),) * 2 + (0.35,)
    water = ndimage.gaussian_filter(proto.water[tissue].astype(np.float32) * mottle, sigma=pv)
    fat = ndimage.gaussian_filter(proto.fat[tissue].astype(np.float32) * mottle, sigma=pv)
    # opposed phase: water and fat magnetisation point opposite ways within a voxel
    signal = np.abs(water - fat) if proto.opposed else water + fat
    del water, fat
    signal *= np.exp(proto.bias_sd * bias)
    noise_re = rng.standard_normal(tissue.shape, dtype=np.float32) * proto.noise_sigma
    noise_im = rng.standard_normal(tissue.shape, dtype=np.float32) * proto.noise_sigma
    magnitude = np.hypot(signal + noise_re, noise_im)  # Rician
    return np.clip(np.rint(magnitude * proto.scale), 0, 32767).astype(np.int16)
