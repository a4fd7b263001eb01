"""Build the MuJoCo model of a robot from its URDF with `mujoco.MjSpec`, and write per-env parameters into it.

The URDF is the geometry truth; this adds what a URDF cannot say: the floor, the free joint,
position-PD actuators from the contract, the IMU and foot sensors, the joint armature, damping and dry
friction, and the contact softness. `write_model_params` puts one env's `EnvParams` row into a model:
the one place where the parameters meet MuJoCo's fields (the batched backend and the gate's single
robot both call it).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from trot.randomization.params import CONTACT_SOLREF
from trot.robots import ContractError, Robot

FOOT_TOUCH_MARGIN = 1.25  # touch-sensor sphere radius / foot radius: catches the contact point
BASE_TOUCH_MARGIN = 0.005  # m, base touch-sensor box grows by this much on each side
SENSOR_SITE_GROUP = 4  # the sensor sites: a group MuJoCo does not draw by default (sitegroup 0-2), out of renders


def build_spec(robot: Robot, floor_friction: float = 1.0) -> mujoco.MjSpec:
    """MjSpec of `robot` standing on a floor, with actuators and sensors in policy joint order."""
    spec = mujoco.MjSpec.from_string(_urdf_for_mujoco(robot.urdf_path))
    spec.option.timestep = robot.physics_dt
    spec.option.integrator = mujoco.mjtIntegrator.mjINT_IMPLICITFAST
    spec.option.cone = mujoco.mjtCone.mjCONE_PYRAMIDAL
    _set_options(spec, robot)

    # Visual-only URDF geoms never collide; collision geoms keep default contact flags.
    for geom in spec.geoms:
        if geom.group != 0 or geom.classname.name == "visual":
            geom.contype = geom.conaffinity = 0
        else:
            geom.solref = list(CONTACT_SOLREF)

    world = spec.worldbody
    tex = spec.add_texture(
        name="grid",
        type=mujoco.mjtTexture.mjTEXTURE_2D,
        builtin=mujoco.mjtBuiltin.mjBUILTIN_CHECKER,
        rgb1=[0.25, 0.3, 0.35],
        rgb2=[0.35, 0.4, 0.45],
        width=256,
        height=256,
    )
    mat = spec.add_material(name="grid", texrepeat=[8, 8], reflectance=0.1)
    mat.textures[mujoco.mjtTextureRole.mjTEXROLE_RGB] = tex.name
    world.add_geom(
        name="floor",
        type=mujoco.mjtGeom.mjGEOM_PLANE,
        size=[0, 0, 0.05],
        material="grid",
        friction=[floor_friction, 0.005, 0.0001],
        solref=list(CONTACT_SOLREF),
    )
    world.add_light(name="sun", pos=[0, 0, 3], dir=[0, 0, -1], type=mujoco.mjtLightType.mjLIGHT_DIRECTIONAL)

    base = spec.body(robot.base_link)
    base.add_freejoint(name="root")
    base.pos = [0, 0, 0.5]  # replaced by the standing height in the keyframe
    _add_base_sensors(spec, robot)

    for name, torque_limit in zip(robot.joint_names, robot.torque_limit):
        joint = spec.joint(name)
        joint.armature = robot.armature
        joint.damping = [robot.damping, 0.0, 0.0]  # MuJoCo 4: polynomial damping coefficients
        joint.frictionloss = robot.frictionloss
        act = spec.add_actuator(name=name, target=name, trntype=mujoco.mjtTrn.mjTRN_JOINT)
        act.set_to_position(kp=robot.kp, kv=robot.kd)
        act.forcelimited = mujoco.mjtLimited.mjLIMITED_TRUE
        act.forcerange = [-torque_limit, torque_limit]
        spec.add_sensor(
            name=f"{name}_torque",
            type=mujoco.mjtSensor.mjSENS_ACTUATORFRC,
            objtype=mujoco.mjtObj.mjOBJ_ACTUATOR,
            objname=name,
        )

    for i, link in enumerate(robot.foot_links):
        _add_foot_sensor(spec, robot, link, i)
    return spec


def _urdf_for_mujoco(urdf_path: Path) -> str:
    """The URDF's text with the MuJoCo import settings trot needs, so that the file itself stays plain URDF:
    keep visual geoms and every link (MuJoCo's URDF defaults discard and fuse them, while parsing), and find
    meshes beside the file."""
    root = ET.parse(urdf_path).getroot()
    compiler = root.find("mujoco/compiler")
    if compiler is None:
        extension = root.find("mujoco")
        if extension is None:
            extension = ET.Element("mujoco")
            root.insert(0, extension)
        compiler = ET.SubElement(extension, "compiler")
    compiler.set("discardvisual", "false")
    compiler.set("fusestatic", "false")
    compiler.set("meshdir", str(urdf_path.parent / compiler.get("meshdir", "")))
    return ET.tostring(root, encoding="unicode")


def _set_options(spec: mujoco.MjSpec, robot: Robot) -> None:
    """robot.toml's [mujoco.option] (e.g. the Go2's impratio), field by field of MuJoCo's mjOption."""
    for name, value in robot.mujoco_option:
        field, current = f"mujoco.option.{name}", getattr(spec.option, name, None)
        if name == "timestep" or not isinstance(current, (int, float)) or isinstance(current, bool):
            raise ContractError(robot.folder / "robot.toml", field, value, "a numeric field of MuJoCo's mjOption "
                                "other than timestep (control.physics_dt), e.g. impratio")  # fmt: skip
        if isinstance(current, int) and value != int(value):
            raise ContractError(robot.folder / "robot.toml", field, value, f"an integer (mjOption.{name})")
        setattr(spec.option, name, type(current)(value))


def _add_base_sensors(spec: mujoco.MjSpec, robot: Robot) -> None:
    base = spec.body(robot.base_link)
    base.add_site(name="imu", pos=list(robot.imu_pos), group=SENSOR_SITE_GROUP)
    # No accelerometer: it forces MuJoCo's post-constraint pass every step (about 10 % of the
    # step time) and no policy term uses it; the emulator's accelerometer comes from PyBullet.
    for kind, name in (
        (mujoco.mjtSensor.mjSENS_FRAMEQUAT, "imu_quat"),
        (mujoco.mjtSensor.mjSENS_GYRO, "imu_gyro"),
    ):
        spec.add_sensor(name=name, type=kind, objtype=mujoco.mjtObj.mjOBJ_SITE, objname="imu")
    # Body contact: a touch site slightly larger than each collision box of the base.
    for geom in base.geoms:
        if geom.type == mujoco.mjtGeom.mjGEOM_BOX and geom.contype:
            site = base.add_site(
                name="base_touch",
                type=mujoco.mjtGeom.mjGEOM_BOX,
                pos=geom.pos,
                quat=geom.quat,
                size=list(np.asarray(geom.size) + BASE_TOUCH_MARGIN),
                group=SENSOR_SITE_GROUP,
            )
            spec.add_sensor(
                name="base_touch",
                type=mujoco.mjtSensor.mjSENS_TOUCH,
                objtype=mujoco.mjtObj.mjOBJ_SITE,
                objname=site.name,
            )
            break


def _add_foot_sensor(spec: mujoco.MjSpec, robot: Robot, link: str, index: int) -> None:
    body = spec.body(link)
    spheres = [g for g in body.geoms if g.type == mujoco.mjtGeom.mjGEOM_SPHERE and g.contype]
    if not spheres:
        raise ValueError(f"{robot.urdf_path}: foot link '{link}' has no collision sphere")
    name = f"foot{index}"
    body.add_site(name=name, pos=spheres[0].pos, size=[robot.foot_radius * FOOT_TOUCH_MARGIN, 0, 0],
                  group=SENSOR_SITE_GROUP)  # fmt: skip
    site = mujoco.mjtObj.mjOBJ_SITE
    for kind, suffix in (
        (mujoco.mjtSensor.mjSENS_TOUCH, "touch"),
        (mujoco.mjtSensor.mjSENS_FRAMEPOS, "pos"),
        (mujoco.mjtSensor.mjSENS_FRAMELINVEL, "vel"),
    ):
        spec.add_sensor(name=f"{name}_{suffix}", type=kind, objtype=site, objname=name)


@dataclass(frozen=True)
class ModelIndex:
    """Addresses in qpos/qvel/ctrl/sensordata, looked up by name once (never hard-coded)."""

    root_qpos: int
    root_qvel: int
    joint_qpos: np.ndarray  # (num_joints,) in policy order
    joint_qvel: np.ndarray
    joint_ctrl: np.ndarray  # actuator ids in policy order
    sensor: dict  # name -> slice into sensordata
    foot_site: np.ndarray  # site ids of the feet


def index_model(model: mujoco.MjModel, robot: Robot) -> ModelIndex:
    """Look up every address the simulator needs, by the robot's joint and sensor names."""
    root = model.joint("root")
    sensor = {}
    for i in range(model.nsensor):
        adr, dim = model.sensor_adr[i], model.sensor_dim[i]
        sensor[model.sensor(i).name] = slice(int(adr), int(adr + dim))
    return ModelIndex(
        root_qpos=int(root.qposadr[0]),
        root_qvel=int(root.dofadr[0]),
        joint_qpos=np.array([model.joint(n).qposadr[0] for n in robot.joint_names]),
        joint_qvel=np.array([model.joint(n).dofadr[0] for n in robot.joint_names]),
        joint_ctrl=np.array([model.actuator(n).id for n in robot.joint_names]),
        sensor=sensor,
        foot_site=np.array([model.site(f"foot{i}").id for i in range(len(robot.foot_links))]),
    )


def standing_height(model: mujoco.MjModel, robot: Robot) -> float:
    """Base height at which the default pose puts the lowest foot sphere on the floor."""
    data = mujoco.MjData(model)
    idx = index_model(model, robot)
    data.qpos[idx.root_qpos : idx.root_qpos + 7] = [0, 0, 0, 1, 0, 0, 0]
    data.qpos[idx.joint_qpos] = robot.default_joint_pos
    mujoco.mj_kinematics(model, data)
    lowest = data.site_xpos[idx.foot_site, 2].min()
    return float(robot.foot_radius - lowest)


def build_model(robot: Robot, floor_friction: float = 1.0) -> mujoco.MjModel:
    """Compiled model with a 'home' keyframe: default pose, feet on the floor."""
    spec = build_spec(robot, floor_friction)
    model = spec.compile()
    height = standing_height(model, robot)
    idx = index_model(model, robot)
    qpos = model.qpos0.copy()
    qpos[idx.root_qpos : idx.root_qpos + 7] = [0, 0, height, 1, 0, 0, 0]
    qpos[idx.joint_qpos] = robot.default_joint_pos
    ctrl = np.zeros(model.nu)
    ctrl[idx.joint_ctrl] = robot.default_joint_pos
    spec.add_key(name="home", qpos=qpos.tolist(), ctrl=ctrl.tolist())
    return spec.compile()


@dataclass(frozen=True)
class ParamTargets:
    """The nominal model fields that per-env parameters scale, and the ids they are written to."""

    body_mass: np.ndarray
    body_inertia: np.ndarray
    body_ipos: np.ndarray
    base: int  # body id of the base
    friction_geoms: np.ndarray  # the floor and the foot spheres (MuJoCo takes the larger friction of two geoms)
    contact_geoms: np.ndarray  # every colliding geom: floor, feet, base (solref is mixed between the two)
    act: np.ndarray  # actuator ids, policy order
    dofs: np.ndarray  # joint dof addresses, policy order


def friction_geoms(m: mujoco.MjModel) -> np.ndarray:
    """The geoms whose sliding friction the `friction` parameter sets: the floor and the foot spheres."""
    feet = [g for g in range(m.ngeom) if m.geom_contype[g] and m.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE]
    return np.array([m.geom("floor").id, *feet])


def contact_geoms(m: mujoco.MjModel) -> np.ndarray:
    """Every colliding geom (floor, feet, base): the geoms whose solref the contact parameters set."""
    return np.flatnonzero(m.geom_contype | m.geom_conaffinity)


def param_targets(model: mujoco.MjModel, robot: Robot) -> ParamTargets:
    """Read the nominal fields once, before any env's parameters are written."""
    idx = index_model(model, robot)
    return ParamTargets(
        body_mass=model.body_mass.copy(),
        body_inertia=model.body_inertia.copy(),
        body_ipos=model.body_ipos.copy(),
        base=model.body(robot.base_link).id,
        friction_geoms=friction_geoms(model),
        contact_geoms=contact_geoms(model),
        act=idx.joint_ctrl,
        dofs=idx.joint_qvel,
    )


def write_model_params(m: mujoco.MjModel, t: ParamTargets, p: dict[str, np.ndarray]) -> None:
    """One env's parameters (`EnvParams` fields of one row, numpy) into its model.

    Armature, damping and masses change without `mj_setConst`: only the constraint solver's
    regularisation weights (`dof_invweight0`, `body_invweight0`) keep their nominal values.
    """
    m.body_mass[:] = t.body_mass * p["mass_scale"]
    m.body_inertia[:] = t.body_inertia * p["mass_scale"]
    base_mass = m.body_mass[t.base]
    m.body_mass[t.base] = base_mass + p["payload_mass"]
    m.body_inertia[t.base] *= (base_mass + p["payload_mass"]) / base_mass
    m.body_ipos[t.base] = t.body_ipos[t.base] + p["com_offset"]
    m.geom_friction[t.friction_geoms, 0] = p["friction"]
    m.geom_solref[t.contact_geoms] = [p["contact_timeconst"], p["contact_dampratio"]]
    m.actuator_gainprm[t.act, 0] = p["kp"]
    m.actuator_biasprm[t.act, 1] = -p["kp"]
    m.actuator_biasprm[t.act, 2] = -p["kd"]
    m.actuator_forcerange[t.act, 0] = -p["torque_limit"]
    m.actuator_forcerange[t.act, 1] = p["torque_limit"]
    m.dof_armature[t.dofs] = p["armature"]
    m.dof_damping[t.dofs] = p["joint_damping"]
    m.dof_frictionloss[t.dofs] = p["joint_friction"]
