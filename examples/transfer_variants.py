"""The engine variants of `transfer_study.py`: the gate's PyBullet and MuJoCo engines, each with one
setting changed on the built object (or a named combination), and the pairs of setups compared.

Nothing here edits `trot.hil`: every change is applied to an engine `trot.hil.gate.cell.make_engine` built
(`changeDynamics` / `setPhysicsEngineParameter` in PyBullet, model fields in MuJoCo), or, for the PD
computed outside MuJoCo's step, to a subclass of `trot.hil.mujoco_robot.MujocoRobot`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import mujoco
import numpy as np

from trot.hil.gate.cell import _quiet_stdout, make_engine
from trot.hil.mujoco_robot import MujocoRobot
from trot.hil.pybullet_model import PyBulletRobot
from trot.robots import Robot

# -- PyBullet: settings changed on the gate's PyBulletRobot after it is built --------------------------


def pb_links(engine) -> list[int]:
    """PyBullet link indices of the robot, the base (-1) included."""
    return [-1, *range(engine.client.getNumJoints(engine.body))]


def pb_substeps(engine, n: int) -> None:
    """Split each physics_dt into n PyBullet steps, the PD recomputed at each."""
    engine.substeps = n
    engine.client.setPhysicsEngineParameter(fixedTimeStep=engine.robot.physics_dt / n)


def pb_engine_params(engine, **params) -> None:
    """`setPhysicsEngineParameter` (erp, contactERP, frictionERP, contactSlop, enableConeFriction, ...)."""
    engine.client.setPhysicsEngineParameter(**params)


def pb_foot_dynamics(engine, floor_too: bool = True, **dynamics) -> None:
    """`changeDynamics` on the four foot links (and the floor): contact stiffness, rolling friction, ..."""
    c = engine.client
    for link in engine.foot_ids:
        c.changeDynamics(engine.body, link, **dynamics)
    if floor_too:
        c.changeDynamics(engine.floor, -1, **dynamics)


def pb_link_dynamics(engine, **dynamics) -> None:
    """`changeDynamics` on every link of the robot (linearDamping, angularDamping, jointDamping, ...)."""
    for link in pb_links(engine):
        engine.client.changeDynamics(engine.body, link, **dynamics)


def pb_dry_friction(engine, torque: float) -> None:
    """The zero-velocity motor that models dry friction, with this maximum torque (N·m)."""
    import pybullet as p

    n = engine.robot.num_joints
    engine.client.setJointMotorControlArray(
        engine.body, engine.joint_ids, p.VELOCITY_CONTROL, targetVelocities=[0.0] * n, forces=[torque] * n
    )


def pb_mujoco_like_contact(engine, timeconst: float = 0.02, dampratio: float = 1.0) -> None:
    """Bullet's soft contact on the feet, a spring-damper shaped like MuJoCo's solref for the robot's weight
    share per foot m: k = m / (tc ζ)², c = 2 m / tc (Bullet: stiffness in series with the floor's, which is
    infinite by default; damping added to the floor's 0.1)."""
    m = engine.robot.total_mass / len(engine.foot_ids)
    k = m / (timeconst * dampratio) ** 2
    c = 2.0 * m / timeconst
    pb_foot_dynamics(engine, floor_too=False, contactStiffness=k, contactDamping=c)


def pb_contact(engine, timeconst: float, dampratio: float = 1.0) -> None:
    """The gate's contact matching (`PyBulletRobot._set_contact`) at another MuJoCo solref."""
    engine._set_contact(timeconst, dampratio)


class LegacyPyBullet(PyBulletRobot):
    """The gate's PyBullet before the fix, or part of the way to it.

    explicit: the PD torque computed before each substep and applied as is (kd explicit); link_armature:
    this fraction of the motors' armature added to each leg link's inertia about its joint axis;
    rigid_contact: Bullet's own contact (no foot stiffness). The defaults are the engine before the fix.
    """

    def __init__(self, robot: Robot, substeps: int = 4, link_armature: float = 1.0, rigid_contact: bool = True,
                 explicit: bool = True):  # fmt: skip
        self.link_armature, self.rigid_contact, self.explicit = link_armature, rigid_contact, explicit
        with _quiet_stdout():
            super().__init__(robot, substeps)

    def _set_contact(self, timeconst: float, dampratio: float) -> None:
        if not self.rigid_contact:
            super()._set_contact(timeconst, dampratio)

    def write_params(self, params) -> None:
        super().write_params(params)
        c = self.client
        for j in self.joint_ids:
            axis = np.abs(np.array(c.getJointInfo(self.body, j)[13]))
            inertia = np.array(c.getDynamicsInfo(self.body, j)[2]) + self.link_armature * self.robot.armature * axis
            c.changeDynamics(self.body, j, localInertiaDiagonal=inertia.tolist())

    def step(self, target, kp=None, kd=None, tau_ff=0.0) -> None:
        if not self.explicit:
            return super().step(target, kp, kd, tau_ff)
        import pybullet as p

        kp = self.kp if kp is None else kp
        kd = self.kd if kd is None else kd
        for _ in range(self.substeps):
            q, qd = self.joint_state()
            tau = np.clip(kp * (np.asarray(target) - q) - kd * qd + tau_ff, -self.torque_limit, self.torque_limit)
            self.last_torque = tau
            forces = (tau - self.joint_damping * qd).tolist()
            self.client.setJointMotorControlArray(self.body, self.joint_ids, p.TORQUE_CONTROL, forces=forces)
            self.client.stepSimulation()


# -- MuJoCo: model fields changed on the gate's MujocoRobot after it is built ---------------------------


def contact_geoms(model: mujoco.MjModel) -> np.ndarray:
    """Every geom that collides (the floor, the base box, the foot spheres)."""
    return np.flatnonzero(model.geom_contype | model.geom_conaffinity)


def foot_geoms(model: mujoco.MjModel) -> np.ndarray:
    """The colliding spheres: the feet."""
    g = contact_geoms(model)
    return g[model.geom_type[g] == mujoco.mjtGeom.mjGEOM_SPHERE]


def mj_solref(engine, timeconst: float, dampratio: float = 1.0, refsafe: bool = True) -> None:
    """Contact softness (solref) on every colliding geom. With refsafe MuJoCo raises timeconst to 2 dt."""
    m = engine.model
    m.geom_solref[contact_geoms(m)] = [timeconst, dampratio]
    if not refsafe:
        m.opt.disableflags |= mujoco.mjtDisableBit.mjDSBL_REFSAFE


def mj_solimp(engine, dmin: float, dmax: float, width: float) -> None:
    """Contact impedance (solimp) on every colliding geom."""
    m = engine.model
    m.geom_solimp[contact_geoms(m), :3] = [dmin, dmax, width]


def mj_condim(engine, condim: int, torsional: float | None = None, rolling: float | None = None) -> None:
    """Contact dimensionality: 3 sliding, 4 + torsional, 6 + rolling, and those coefficients (m) on every
    colliding geom (MuJoCo takes the larger condim and the larger coefficient of two geoms)."""
    m = engine.model
    g = contact_geoms(m)
    m.geom_condim[g] = condim
    if torsional is not None:
        m.geom_friction[g, 1] = torsional
    if rolling is not None:
        m.geom_friction[g, 2] = rolling


def mj_option(engine, **fields) -> None:
    """Fields of MjOption: cone, impratio, noslip_iterations, integrator, iterations, ..."""
    for name, value in fields.items():
        setattr(engine.model.opt, name, value)


def mj_disable(engine, flag: mujoco.mjtDisableBit) -> None:
    """Set one of MjOption's disable flags (eulerdamp, refsafe, ...)."""
    engine.model.opt.disableflags |= flag


def mj_joint_terms(engine, armature: float = 1.0, damping: float = 1.0, frictionloss: float = 1.0) -> None:
    """Scale the leg joints' armature, viscous damping and dry friction (frictionloss constraint)."""
    m, dofs = engine.model, engine.idx.joint_qvel
    m.dof_armature[dofs] *= armature
    m.dof_damping[dofs] *= damping
    m.dof_frictionloss[dofs] *= frictionloss
    mujoco.mj_setConst(m, engine.data)


LEG_JOINTS = {"abduction": 0, "hip": 1, "knee": 2}  # index within a leg, policy order (robot.toml)


def mj_armature_in_link(engine, joints: tuple[str, ...] = tuple(LEG_JOINTS)) -> None:
    """PyBullet's way: no joint armature; the armature added to each leg link's inertia about its joint axis."""
    m = engine.model
    names = [n for i, n in enumerate(engine.robot.joint_names) if i % 3 in {LEG_JOINTS[j] for j in joints}]
    for name in names:
        joint = m.joint(name)
        body = joint.bodyid[0]
        rot = np.zeros(9)
        mujoco.mju_quat2Mat(rot, m.body_iquat[body])
        axis_inertial = rot.reshape(3, 3).T @ m.jnt_axis[joint.id]  # joint axis in the principal frame
        m.body_inertia[body] += m.dof_armature[joint.dofadr[0]] * axis_inertial**2
        m.dof_armature[joint.dofadr[0]] = 0.0
    mujoco.mj_setConst(m, engine.data)


def mj_base_inertia(engine, roll_armatures: int, pitch_armatures: int) -> None:
    """Add this many armatures to the base's roll / pitch inertia alone; the joints keep their armature.

    With (4, 8) the whole body gets the roll and pitch inertia PyBullet's links add (4 abduction axes
    along x, 8 hip and knee axes along y), but the legs swing as in MuJoCo."""
    m, a = engine.model, engine.robot.armature
    base = m.body(engine.robot.base_link).id
    m.body_inertia[base] += [roll_armatures * a, pitch_armatures * a, 0.0]
    mujoco.mj_setConst(m, engine.data)


class SubstepMujoco(MujocoRobot):
    """MujocoRobot stepping `substeps` MuJoCo steps of physics_dt / substeps per physics_dt.

    With `explicit_pd` the PD is computed outside the step, as PyBullet did before the fix: motor actuators take
    the clipped PD torque as ctrl, recomputed before each MuJoCo step, so kd is no longer integrated implicitly.
    """

    def __init__(self, robot: Robot, substeps: int = 1, explicit_pd: bool = False):
        self.substeps, self.explicit_pd = substeps, explicit_pd
        super().__init__(robot)
        self.model.opt.timestep = robot.physics_dt / substeps

    def write_params(self, params) -> None:
        super().write_params(params)
        if self.explicit_pd:  # motors: ctrl is the torque; the clip is in the PD law below
            m, act = self.model, self.idx.joint_ctrl
            self.gains = (m.actuator_gainprm[act, 0].copy(), -m.actuator_biasprm[act, 2], m.actuator_forcerange[act, 1])
            m.actuator_gainprm[act, 0] = 1.0
            m.actuator_biasprm[act, :3] = 0.0
            m.actuator_forcerange[act] = [-np.inf, np.inf]

    def step(self, target) -> None:
        if not self.explicit_pd:
            for _ in range(self.substeps):
                super().step(target)
            return
        kp, kd, lim = self.gains
        for _ in range(self.substeps):
            q, qd = self.joint_state()
            tau = np.clip(kp * (np.asarray(target) - q) - kd * qd, -lim, lim)
            self.data.ctrl[self.idx.joint_ctrl] = tau
            mujoco.mj_step(self.model, self.data)
        self.last_torque = tau


# -- the variants -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    engine: str  # "pybullet" or "mujoco"
    help: str
    changes: tuple[Callable, ...] = ()  # each applied to the engine once the cell has written its parameters
    build_with: dict | None = None  # LegacyPyBullet(robot, **build_with) / SubstepMujoco(...) instead of the gate's

    def build(self, robot: Robot):
        """The engine, before the cell writes its parameters and the changes are applied."""
        if self.build_with is None:
            return make_engine(self.engine, robot)
        return (LegacyPyBullet if self.engine == "pybullet" else SubstepMujoco)(robot, **self.build_with)

    def apply(self, engine) -> None:
        for change in self.changes:
            change(engine)


def _pb(help: str, *changes, build_with: dict | None = None) -> Variant:
    return Variant("pybullet", help, changes, build_with)


def _old(help: str, *changes, **build_with) -> Variant:
    return Variant("pybullet", help, changes, build_with)


def _mj(help: str, *changes, substep: dict | None = None) -> Variant:
    return Variant("mujoco", help, changes, substep)


# Bullet combines rolling (spinning) friction as r_a μ_b + r_b μ_a: set on the feet alone, it is r_foot μ_floor.
ROLLING = {"rollingFriction": 0.0001, "spinningFriction": 0.005, "floor_too": False}  # MuJoCo's condim-6 defaults, m
IMPLICIT = {"link_armature": 0.0, "explicit": False, "substeps": 16}  # the gate's PyBullet step, for LegacyPyBullet
EXPLICIT = {"link_armature": 0.0, "rigid_contact": False}  # the gate's PyBullet but for an explicit PD

VARIANTS: dict[str, Variant] = {
    # PyBullet as the gate builds it now, then one change
    "pb.base": _pb("the gate's PyBullet: implicit damping, 16 substeps of 0.25 ms, no armature, contact matched"),
    "pb.substeps_2": _pb("2 substeps of 2 ms", partial(pb_substeps, n=2)),
    "pb.substeps_4": _pb("4 substeps of 1 ms", partial(pb_substeps, n=4)),
    "pb.substeps_8": _pb("8 substeps of 0.5 ms", partial(pb_substeps, n=8)),
    "pb.substeps_32": _pb("32 substeps (convergence check)", partial(pb_substeps, n=32)),
    "pb.explicit_sub16": _pb("explicit PD in 16 substeps (the other fix)", build_with={**EXPLICIT, "substeps": 16}),
    "pb.explicit_sub32": _pb("explicit PD in 32 substeps", build_with={**EXPLICIT, "substeps": 32}),
    "pb.rigid_contact": _pb("Bullet's rigid contact", build_with={**IMPLICIT, "rigid_contact": True}),
    "pb.contact_0.04": _pb("contact matched to MuJoCo's solref 0.04 (the gate's soft_contact)",
                           partial(pb_contact, timeconst=0.04)),  # fmt: skip
    # PyBullet as the gate built it before the fix, then one change
    "old.base": _old("the gate's PyBullet before the fix: explicit PD in 4 substeps, armature in link inertia, rigid "
                     "contact"),  # fmt: skip
    "old.substeps_1": _old("1 PyBullet step per physics_dt", substeps=1),
    "old.substeps_8": _old("8 substeps", substeps=8),
    "old.substeps_16": _old("16 substeps", substeps=16),
    "old.no_refl_inertia": _old("armature NOT added to link inertia, 4 substeps", link_armature=0.0),
    "old.no_refl_inertia_sub8": _old("no reflected inertia, 8 substeps", link_armature=0.0, substeps=8),
    "old.no_refl_inertia_sub16": _old("no reflected inertia, 16 substeps", link_armature=0.0, substeps=16),
    "old.no_refl_inertia_sub32": _old(
        "no reflected inertia, 32 substeps (convergence check)", link_armature=0.0, substeps=32
    ),
    "old.refl_inertia_x0.25": _old("a quarter of the reflected inertia in the links, 4 substeps", link_armature=0.25),
    "old.soft_contact_mj": _old(
        "foot contact spring-damper like MuJoCo's solref (0.02, 1): k=2.0e3 N/m, c=79 N·s/m", pb_mujoco_like_contact
    ),
    "old.erp_0.8": _old(
        "erp, contactERP, frictionERP 0.8 (default 0.2)",
        partial(pb_engine_params, erp=0.8, contactERP=0.8, frictionERP=0.8),
    ),
    "old.erp_0.05": _old(
        "erp, contactERP, frictionERP 0.05", partial(pb_engine_params, erp=0.05, contactERP=0.05, frictionERP=0.05)
    ),
    "old.restitution_0.5": _old(
        "restitution 0.5 on feet and floor (Bullet multiplies: 0.25; default 0)",
        partial(pb_foot_dynamics, restitution=0.5),
    ),
    "old.contact_slop_0.002": _old("contactSlop 2 mm", partial(pb_engine_params, contactSlop=0.002)),
    "old.rolling_mj": _old(
        "rolling 0.0001 m, spinning 0.005 m friction (MuJoCo's condim-6 defaults)", partial(pb_foot_dynamics, **ROLLING)
    ),
    "old.rolling_0.001": _old(
        "rolling friction 0.001 m", partial(pb_foot_dynamics, rollingFriction=0.001, floor_too=False)
    ),
    "old.rolling_0.01": _old(
        "rolling friction 0.01 m", partial(pb_foot_dynamics, rollingFriction=0.01, floor_too=False)
    ),
    "old.spinning_0.01": _old(
        "spinning friction 0.01 m", partial(pb_foot_dynamics, spinningFriction=0.01, floor_too=False)
    ),
    "old.cone_off": _old("enableConeFriction 0 (pyramid)", partial(pb_engine_params, enableConeFriction=0)),
    "old.cone_on": _old("enableConeFriction 1 (cone)", partial(pb_engine_params, enableConeFriction=1)),
    "old.friction_anchor": _old("frictionAnchor on feet and floor", partial(pb_foot_dynamics, frictionAnchor=1)),
    "old.solver_iter_200": _old(
        "numSolverIterations 200 (default 50)", partial(pb_engine_params, numSolverIterations=200)
    ),
    "old.no_body_damping": _old(
        "linearDamping, angularDamping 0 on every link (Bullet default 0.04)",
        partial(pb_link_dynamics, linearDamping=0.0, angularDamping=0.0),
    ),
    "old.no_urdf_joint_damping": _old(
        "Bullet's own URDF jointDamping 0 (the explicit 0.01 stays)", partial(pb_link_dynamics, jointDamping=0.0)
    ),
    "old.no_dry_friction": _old("dry-friction motor off", partial(pb_dry_friction, torque=0.0)),
    # MuJoCo as the gate builds it, then one change
    "mj.base": _mj("the gate's MuJoCo: implicitfast, position actuators, armature, solref (0.02, 1), pyramidal"),
    "mj.solref_0.008": _mj(
        "solref timeconst 0.008 (= 2 dt, the stiffest refsafe allows)", partial(mj_solref, timeconst=0.008)
    ),
    "mj.solref_0.005_norefsafe": _mj(
        "solref timeconst 0.005 with refsafe off", partial(mj_solref, timeconst=0.005, refsafe=False)
    ),
    "mj.solref_0.04": _mj("solref timeconst 0.04 (softer)", partial(mj_solref, timeconst=0.04)),
    "mj.dampratio_0.5": _mj("solref dampratio 0.5 (default 1)", partial(mj_solref, timeconst=0.02, dampratio=0.5)),
    "mj.dampratio_2": _mj("solref dampratio 2", partial(mj_solref, timeconst=0.02, dampratio=2.0)),
    "mj.solimp_stiff": _mj(
        "solimp (0.99, 0.999, 0.001) (default 0.9, 0.95, 0.001)", partial(mj_solimp, dmin=0.99, dmax=0.999, width=0.001)
    ),
    "mj.condim_4": _mj("condim 4: + torsional friction 0.005 m", partial(mj_condim, condim=4)),
    "mj.condim_6": _mj("condim 6: + torsional 0.005 m and rolling 0.0001 m", partial(mj_condim, condim=6)),
    "mj.torsional_0.01": _mj("condim 4, torsional friction 0.01 m", partial(mj_condim, condim=4, torsional=0.01)),
    "mj.rolling_0.001": _mj("condim 6, rolling friction 0.001 m", partial(mj_condim, condim=6, rolling=0.001)),
    "mj.rolling_0.01": _mj("condim 6, rolling friction 0.01 m", partial(mj_condim, condim=6, rolling=0.01)),
    "mj.elliptic": _mj("elliptic friction cone", partial(mj_option, cone=mujoco.mjtCone.mjCONE_ELLIPTIC)),
    "mj.noslip_10": _mj("noslip_iterations 10", partial(mj_option, noslip_iterations=10)),
    "mj.euler": _mj(
        "Euler integrator (kd of the actuator explicit; joint damping implicit via eulerdamp)",
        partial(mj_option, integrator=mujoco.mjtIntegrator.mjINT_EULER),
    ),
    "mj.euler_no_eulerdamp": _mj(
        "Euler integrator, eulerdamp off (everything explicit)",
        partial(mj_option, integrator=mujoco.mjtIntegrator.mjINT_EULER),
        partial(mj_disable, flag=mujoco.mjtDisableBit.mjDSBL_EULERDAMP),
    ),
    "mj.explicit_pd": _mj(
        "motor actuators, PD computed before each 4 ms step (explicit kd)", substep={"substeps": 1, "explicit_pd": True}
    ),
    "mj.explicit_pd_sub4": _mj(
        "motor actuators, PD recomputed over 4 x 1 ms steps (PyBullet's scheme)",
        substep={"substeps": 4, "explicit_pd": True},
    ),
    "mj.armature_in_link": _mj(
        "armature moved into the leg links' inertia about the joint axis (PyBullet's way)", mj_armature_in_link
    ),
    "mj.armature_x0.5": _mj("armature x0.5", partial(mj_joint_terms, armature=0.5)),
    "mj.armature_x1.5": _mj("armature x1.5", partial(mj_joint_terms, armature=1.5)),
    "mj.no_damping_friction": _mj(
        "joint damping and frictionloss 0", partial(mj_joint_terms, damping=0.0, frictionloss=0.0)
    ),
    "mj.substeps_4": _mj("4 implicitfast steps of 1 ms per physics_dt (convergence check)", substep={"substeps": 4}),
    "mj.armature_x0": _mj(
        "no armature at all (what PyBullet has without reflected inertia)", partial(mj_joint_terms, armature=0.0)
    ),
    # which part of PyBullet's armature-in-link does it
    "mj.armature_in_link_abd": _mj(
        "armature into link inertia on the abduction joints only (roll)",
        partial(mj_armature_in_link, joints=("abduction",)),
    ),
    "mj.armature_in_link_hip": _mj(
        "armature into link inertia on the hip joints only", partial(mj_armature_in_link, joints=("hip",))
    ),
    "mj.armature_in_link_knee": _mj(
        "armature into link inertia on the knee joints only", partial(mj_armature_in_link, joints=("knee",))
    ),
    "mj.body_inertia_like_pb": _mj(
        "joint armature kept; base roll +4, pitch +8 armatures (PyBullet's body inertia)",
        partial(mj_base_inertia, roll_armatures=4, pitch_armatures=8),
    ),
    # combinations
    "mj.pb_like": _mj(
        "PyBullet's modelling in MuJoCo: armature in links, explicit PD 4 x 1 ms, stiffest contact (solref 0.008)",
        mj_armature_in_link,
        partial(mj_solref, timeconst=0.008),
        substep={"substeps": 4, "explicit_pd": True},
    ),
    "mj.explicit_sub16_stiff": _mj(
        "armature kept, explicit PD 16 x 0.25 ms, solref 0.008 (mj.pb_fixed_like with the armature)",
        partial(mj_solref, timeconst=0.008),
        substep={"substeps": 16, "explicit_pd": True},
    ),
    "mj.pb_fixed_like": _mj(
        "the fixed PyBullet in MuJoCo: no armature, explicit PD 16 x 0.25 ms, solref 0.008",
        partial(mj_joint_terms, armature=0.0),
        partial(mj_solref, timeconst=0.008),
        substep={"substeps": 16, "explicit_pd": True},
    ),
}

# (PyBullet variant, MuJoCo variant): how far apart the two engines are when each is set up this way.
PAIRS = (
    ("old.base", "mj.base"),  # the gate before the fix
    ("old.base", "mj.armature_in_link"),  # MuJoCo given PyBullet's armature modelling
    ("old.base", "mj.pb_like"),  # ... and PyBullet's explicit PD and stiff contact
    ("old.no_refl_inertia_sub16", "mj.base"),  # PyBullet without the armature in its links
    ("old.no_refl_inertia_sub16", "mj.solref_0.008"),  # ... and MuJoCo with its stiffest contact
    ("old.no_refl_inertia_sub16", "mj.explicit_sub16_stiff"),  # ... MuJoCo with explicit PD at 0.25 ms too
    ("old.no_refl_inertia_sub16", "mj.pb_fixed_like"),  # ... and without its armature: the fixed PyBullet
    ("pb.explicit_sub16", "mj.base"),  # the fix by substeps alone, contact matched
    ("pb.base", "mj.base"),  # the gate now
    ("pb.contact_0.04", "mj.solref_0.04"),  # the gate's soft_contact perturbation
)
