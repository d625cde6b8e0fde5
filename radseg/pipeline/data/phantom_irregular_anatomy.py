"""The ``irregular`` phantom's anatomy: organs as perturbed unions of rotated ellipsoids, HU by contrast phase.

Body millimetres: u towards the patient's right, v anterior, w superior; the origin is the body's centre
in the axial plane and the liver's centre along w. Look-alike organs sit next to the liver: a spleen and a
stomach wall of liver-like HU, a heart on the dome, a right kidney touching its underside, a gallbladder
and the inferior vena cava carved out of it. Every random choice comes from the Generator passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from radseg.pipeline.data.phantom_irregular_shapes import Ellipsoid, Shape, SmoothField, perturbed, random_rotation

#: contrast phases and their share of cases
PHASES = ("plain", "arterial", "venous")
PHASE_SHARE = (0.25, 0.2, 0.55)
#: HU ranges per phase; a name in _RELATIVE is an offset from the liver's HU
_PHASE_HU = {
    "plain": {"liver": (50, 65), "aorta": (35, 45), "vein": (35, 45), "hepatic_vessel": (-22, -10),
              "cortex": (28, 36), "medulla": (24, 30), "blood": (35, 45), "bowel": (25, 40), "muscle": (45, 58)},
    "arterial": {"liver": (65, 85), "aorta": (250, 350), "vein": (90, 130), "hepatic_vessel": (5, 20),
                 "cortex": (170, 220), "medulla": (70, 100), "blood": (240, 320), "bowel": (40, 60), "muscle": (50, 62)},
    "venous": {"liver": (95, 125), "aorta": (140, 180), "vein": (140, 180), "hepatic_vessel": (45, 75),
               "cortex": (160, 200), "medulla": (150, 190), "blood": (140, 180), "bowel": (50, 80), "muscle": (55, 68)},
}
#: the look-alikes: within these HU of the liver whatever the phase
_LOOK_ALIKE = {"spleen": (-8, 8), "stomach_wall": (-10, 10), "myocardium": (-10, 10)}
_RELATIVE = ("hepatic_vessel", *_LOOK_ALIKE)
#: vertebrae and ribs repeat along w every so many mm
SPINE_PERIOD_MM = 32.0
RIB_PERIOD_MM = 27.0
_FIXED_HU = {"fat": (-115, -85), "lung": (-880, -820), "cortex_bone": (600, 900), "cancellous": (160, 260),
             "disc": (70, 100), "fluid": (0, 20), "gas": (-960, -880), "csf": (5, 15)}


@dataclass
class Organ:
    """One organ to paint: a shape, its HU, an optional wall (inside ``wall_mm``: ``inner_hu``) and texture."""

    name: str
    shape: Shape
    hu: float
    inner_hu: float | None = None
    wall_mm: float = 0.0
    #: in the lumen, gas anterior to this v (mm): an air-fluid level, the patient lying supine
    gas_above_v: float | None = None
    gas_hu: float = -920.0
    texture: SmoothField | None = None
    texture_hu: float = 0.0


@dataclass
class IrregularAnatomy:
    """Every anatomical choice of one case (body mm)."""

    phase: str
    hu: dict[str, float]
    body_axes: tuple[float, float]  # half width, half depth (anterior) in mm
    posterior_scale: float  # the back is flatter: its half depth is body_axes[1] times this
    exponent: float  # superellipse exponent of the body outline
    fat_mm: float
    muscle_mm: float
    spine_v: float
    spine_radius: float
    spine_phase: float  # w (mm) of one intervertebral disc; they repeat every SPINE_PERIOD_MM
    rib_phase: float  # the same for the ribs
    organs: list[Organ]  # painted in order, before the liver
    liver: Shape
    carved: list[Organ]  # painted after the liver and taken out of its label (gallbladder, IVC)
    liver_texture: SmoothField
    liver_texture_hu: float
    vessels: tuple[SmoothField, SmoothField]
    vessel_radius: float  # in units of the vessel fields (about 0.1-0.2)
    bowel: tuple[SmoothField, SmoothField]
    bowel_top: float  # w above which there is no bowel
    oral_contrast: bool


def sample_hu(rng: np.random.Generator, phase: str) -> dict[str, float]:
    """The HU of every tissue for one case in ``phase``."""
    hu = {name: float(rng.uniform(*span)) for name, span in {**_PHASE_HU[phase], **_LOOK_ALIKE, **_FIXED_HU}.items()}
    for name in _RELATIVE:
        hu[name] += hu["liver"]
    return hu


def cavity_axes(anatomy: IrregularAnatomy) -> tuple[float, float, float]:
    """The half width, anterior and posterior half depths (mm) of the abdominal cavity, inside fat and muscle."""
    a, b = anatomy.body_axes
    inset = anatomy.fat_mm + anatomy.muscle_mm
    return a - inset, b - inset, b * anatomy.posterior_scale - inset


def sample_anatomy(rng: np.random.Generator) -> IrregularAnatomy:
    """One case's anatomy: body, spine, liver, look-alike organs, textures, vessels and bowel."""
    phase = str(rng.choice(PHASES, p=PHASE_SHARE))
    hu = sample_hu(rng, phase)
    a, b, posterior = rng.uniform(105, 135), rng.uniform(80, 100), rng.uniform(0.8, 0.92)
    fat, muscle = rng.uniform(8, 30), rng.uniform(7, 12)
    ai, bi, back = a - fat - muscle, b - fat - muscle, b * posterior - fat - muscle
    liver = _sample_liver(rng, ai, bi)
    spine_radius = rng.uniform(15, 20)
    anatomy = IrregularAnatomy(
        phase=phase, hu=hu, body_axes=(a, b), posterior_scale=posterior,
        exponent=rng.uniform(2.0, 2.6), fat_mm=fat, muscle_mm=muscle,
        spine_v=-back + spine_radius + rng.uniform(4, 10), spine_radius=spine_radius,
        spine_phase=rng.uniform(0, SPINE_PERIOD_MM), rib_phase=rng.uniform(0, RIB_PERIOD_MM),
        organs=[], liver=liver, carved=[],
        liver_texture=SmoothField.sample(rng, *liver.box(), rng.uniform(5, 10)),
        liver_texture_hu=rng.uniform(2, 6),
        vessels=(SmoothField.sample(rng, *liver.box(), 25.0), SmoothField.sample(rng, *liver.box(), 25.0)),
        vessel_radius=rng.uniform(0.12, 0.2),
        bowel=(SmoothField.sample(rng, (-ai, -bi, -400), (ai, bi, 100), rng.uniform(9, 14)),
               SmoothField.sample(rng, (-ai, -bi, -400), (ai, bi, 100), 20.0)),
        bowel_top=rng.uniform(-30, 5), oral_contrast=bool(rng.uniform() < 0.2),
    )
    anatomy.organs = _sample_neighbours(rng, anatomy, ai, bi)
    anatomy.carved = _sample_carved(rng, anatomy, ai)
    return anatomy


def _sample_liver(rng: np.random.Generator, ai: float, bi: float) -> Shape:
    """A right lobe, a left lobe across the midline, a caudate lobe and sometimes a Riedel's lobe."""
    centre = np.array([0.45 * ai, rng.uniform(-0.05, 0.1) * bi, 0.0])
    z_axis = np.array([0.0, 0.0, 1.0])
    # the right lobe leans: its dome is medial, its tip lateral and low, as on a coronal view
    lean = random_rotation(rng, 25, np.array([0.0, 1.0, 0.0]), min_degrees=10)
    lean = lean if lean[0, 2] < 0 else lean.T
    right = Ellipsoid(centre, np.array([0.55 * ai, 0.78 * bi, rng.uniform(58, 72)]) * rng.uniform(0.9, 1.05, 3),
                      lean @ random_rotation(rng, 8))
    left_reach = rng.uniform(0.35, 0.6) * ai  # a long left lobe ("beaver tail") reaches the spleen
    left = Ellipsoid(centre + np.array([-0.6 * ai, 0.3 * bi, rng.uniform(5, 20)]),
                     np.array([left_reach, rng.uniform(0.3, 0.42) * bi, rng.uniform(35, 50)]),
                     random_rotation(rng, 15, z_axis))
    caudate = Ellipsoid(centre + np.array([-0.2 * ai, -0.15 * bi, rng.uniform(-5, 10)]),
                        np.array([18.0, 18.0, 35.0]) * rng.uniform(0.85, 1.15, 3))
    parts = [right, left, caudate]
    if rng.uniform() < 0.35:
        parts.append(Ellipsoid(centre + np.array([0.15 * ai, 0.1 * bi, -70.0]),
                               np.array([25.0, 32.0, 45.0]) * rng.uniform(0.8, 1.1, 3), random_rotation(rng, 15)))
    return perturbed(rng, parts, rng.uniform(2.5, 6.0), rng.uniform(30, 60))


def top_and_bottom(shape: Shape) -> tuple[float, float]:
    """The w (mm) of the highest and lowest points of a shape's ellipsoids, before its perturbation."""
    return (max(p.center[2] + p.half_extent()[2] for p in shape.parts),
            min(p.center[2] - p.half_extent()[2] for p in shape.parts))


def _sample_neighbours(rng: np.random.Generator, anatomy: IrregularAnatomy, ai: float, bi: float) -> list[Organ]:
    """Lungs, heart, kidneys, stomach and spleen, in painting order (the liver is painted over them)."""
    hu, top = anatomy.hu, top_and_bottom(anatomy.liver)[0]
    organs = []
    for side in (1, -1):
        lung = Ellipsoid(np.array([side * 0.5 * ai, -0.1 * bi, top - rng.uniform(15, 30) + 110]),
                         np.array([0.5 * ai, 0.8 * bi, 110.0]))
        organs.append(Organ("lung", perturbed(rng, [lung], 4.0, 50.0), hu["lung"]))
    heart = Ellipsoid(np.array([-0.2 * ai, 0.25 * bi, top + rng.uniform(35, 50)]),
                      np.array([55.0, 45.0, 50.0]) * rng.uniform(0.85, 1.1, 3), random_rotation(rng, 20))
    organs.append(Organ("heart", perturbed(rng, [heart], 2.0, 40.0), hu["myocardium"], hu["blood"],
                        rng.uniform(8, 12)))
    for side, w in ((1, rng.uniform(-75, -55)), (-1, rng.uniform(-55, -35))):
        kidney = Ellipsoid(np.array([side * (anatomy.spine_radius + 42), anatomy.spine_v + 8, w]),
                           np.array([24.0, 22.0, 52.0]) * rng.uniform(0.9, 1.1, 3), random_rotation(rng, 20))
        organs.append(Organ("kidney", perturbed(rng, [kidney], 2.0, 30.0), hu["cortex"], hu["medulla"],
                            rng.uniform(6, 9)))
    organs.append(_sample_stomach(rng, hu, ai, bi))
    spleen = Ellipsoid(np.array([-0.72 * ai, -0.35 * bi, rng.uniform(5, 25)]),
                       np.array([rng.uniform(20, 28), rng.uniform(45, 60), rng.uniform(45, 60)]),
                       random_rotation(rng, 30, np.array([0.0, 0.0, 1.0])))
    organs.append(Organ("spleen", perturbed(rng, [spleen], 3.0, 35.0), hu["spleen"],
                        texture=SmoothField.sample(rng, *_box_of(spleen), 12.0), texture_hu=4.0))
    return organs


def _box_of(part: Ellipsoid) -> tuple[np.ndarray, np.ndarray]:
    return part.center - part.half_extent() - 10, part.center + part.half_extent() + 10


def _sample_stomach(rng: np.random.Generator, hu: dict[str, float], ai: float, bi: float) -> Organ:
    """A stomach whose liver-like wall touches the left lobe; its lumen holds fluid, gas above a level."""
    body = Ellipsoid(np.array([-0.42 * ai, 0.15 * bi, rng.uniform(10, 35)]),
                     np.array([rng.uniform(32, 45), rng.uniform(28, 40), rng.uniform(40, 55)]),
                     random_rotation(rng, 25))
    gas_above = body.center[1] + rng.uniform(-0.5, 1.2) * body.axes[1]
    return Organ("stomach", perturbed(rng, [body], 3.0, 25.0), hu["stomach_wall"], hu["fluid"],
                 rng.uniform(3, 7), gas_above_v=float(gas_above), gas_hu=hu["gas"])


def _sample_carved(rng: np.random.Generator, anatomy: IrregularAnatomy, ai: float) -> list[Organ]:
    """The inferior vena cava behind the liver and, in most cases, a gallbladder under it."""
    hu = anatomy.hu
    ivc = Ellipsoid(np.array([anatomy.spine_radius + 6, anatomy.spine_v + anatomy.spine_radius + 12, 0.0]),
                    np.array([13.0, 10.0, 400.0]) * rng.uniform(0.85, 1.15, 3))
    carved = [Organ("ivc", Shape([ivc]), hu["vein"])]
    if rng.uniform() < 0.75:
        liver_centre = anatomy.liver.parts[0].center
        gallbladder = Ellipsoid(liver_centre + np.array([-0.15 * ai, 0.45 * anatomy.body_axes[1] * 0.7, -45.0]),
                                np.array([16.0, 16.0, 35.0]) * rng.uniform(0.8, 1.15, 3),
                                random_rotation(rng, 35, np.array([1.0, 0.0, 0.0])))
        carved.append(Organ("gallbladder", perturbed(rng, [gallbladder], 1.5, 20.0), hu["fluid"]))
    return carved
