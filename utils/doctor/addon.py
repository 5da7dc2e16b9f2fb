"""The doctor as an add-on of the training spine: findings live, diagnosis.json at each evaluation and at the end."""
from __future__ import annotations

from utils.doctor import build_doctor
from utils.training.addon import AddOn, TrainRun
from utils.training.ranks import any_rank


class DoctorAddOn(AddOn):
    """Enabled by ``Doctor.enable``. Every rank runs it (its stop decisions must agree); rank 0 alone prints and writes."""

    name = "doctor"

    @classmethod
    def create(cls, run: TrainRun) -> DoctorAddOn | None:
        return cls() if run.cfg["Doctor"]["enable"] else None

    def callbacks(self, run: TrainRun) -> dict[str, list]:
        self.doctor = build_doctor(run.cfg, run.bundle, run.network, run.progress, run.steps_per_epoch,
                                   run.run_dir if run.main else None, run.writer, run.print_fn,
                                   sync_flag=any_rank if run.world > 1 else None)
        if run.resume and "doctor" in run.state:
            self.doctor.load_state_dict(run.state["doctor"])
        run.stateful["doctor"] = self.doctor  # saved with every checkpoint (the Checkpointer holds this dict)
        return {"listen": [self.doctor]}

    def stop_reason(self) -> str | None:
        return self.doctor.stop_reason  # NaN in the input or the weights
