"""The nightly's doit reporter: doit's console output, plus one record per task."""
import threading
import time

from doit.reporter import ConsoleReporter


class NightlyReporter(ConsoleReporter):
    """doit's console output, plus one record per task for the report. Thread-safe: with
    `-n N -P thread` doit calls execute_task() in its worker threads."""

    def __init__(self, outstream, t0, clock=time.time):
        super().__init__(outstream, {"failure_verbosity": 0})
        self.t0 = t0
        self.clock = clock
        self.records = {}
        self.tasks = {}
        self.selected = []
        self._lock = threading.Lock()

    def _now(self):
        return round(self.clock() - self.t0, 3)

    def _record(self, task):
        rec = self.records.get(task.name)
        if rec is None:
            rec = {"name": task.name, "stage": task.name.split(":", 1)[0], "status": None,
                   "why": None, "started": None, "finished": None, "error": None,
                   "actions": bool(task.actions), "output": ""}
            self.records[task.name] = rec
        return rec

    def initialize(self, tasks, selected_tasks):
        self.tasks = tasks
        self.selected = list(selected_tasks or [])

    def execute_task(self, task):
        from tasks.model.stamp import REASONS
        # the action (e.g. the builder) pops its reason: read it before the action runs
        why = REASONS.get(task.name)
        with self._lock:
            rec = self._record(task)
            rec.update(status="running", started=self._now(), why=why)
        super().execute_task(task)

    def add_success(self, task):
        with self._lock:
            rec = self._record(task)
            rec.update(status="ran", finished=self._now())
        super().add_success(task)

    def add_failure(self, task, fail):
        from doit.exceptions import UnmetDependency
        with self._lock:
            rec = self._record(task)
            now = self._now()
            if isinstance(fail, UnmetDependency) and rec["started"] is None:
                needs = ", ".join(fail.message.split())
                rec.update(status="blocked", why=f"not run: {needs} did not succeed")
            else:
                rec.update(status="failed", error=fail.get_msg().strip(), finished=now)
                if rec["started"] is None:
                    rec["started"] = now
                rec["output"] = "".join((getattr(a, "err", None) or "") + (getattr(a, "out", None) or "")
                                        for a in task.actions)
        super().add_failure(task, fail)

    def skip_uptodate(self, task):
        with self._lock:
            self._record(task).update(status="up-to-date")
        super().skip_uptodate(task)

    def skip_ignore(self, task):
        with self._lock:
            self._record(task).update(status="ignored", why="ignored (`doit ignore`)")
        super().skip_ignore(task)

    def wanted(self):
        """Names of the tasks this run was to visit: the selected ones and their deps."""
        seen, todo = set(), list(self.selected)
        while todo:
            name = todo.pop()
            if name in seen or name not in self.tasks:
                continue
            seen.add(name)
            task = self.tasks[name]
            todo += list(task.task_dep) + list(getattr(task, "setup_tasks", []))
        return seen
