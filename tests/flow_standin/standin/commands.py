"""The stand-in's command registry, shaped as hicom.commands: COMMANDS maps a name to an entry with NAME and
TRACKED (the command takes --parent-run-id and logs its own run), which the flow asks."""
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    NAME: str
    TRACKED: bool


COMMANDS = {c.NAME: c for c in (Command("make", False), Command("train", True), Command("evaluate", True),
                                Command("register", True), Command("promote", True),
                                Command("pipeline-report", False))}
