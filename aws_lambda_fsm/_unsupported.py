"""What of aws-lambda-fsm lambda-fsm does not provide, and what to use instead.

Each refusal is a :class:`~fsm.errors.TransitionError`, so an action that runs into one
fails its instance at once (no retry can help), and also the builtin error that the
same code would have met (``AttributeError``, ``KeyError``, ``ImportError``), so that
``hasattr``, ``obj.get`` and ``try: import`` keep working.
"""

from __future__ import annotations

from fsm.errors import TransitionError

# Parts of aws-lambda-fsm (its modules, and its FSM class) with no counterpart here: what to use instead.
MODULES = {
    "aws": "its AWS helpers (get_connection, get_arn_from_arn_string, ...): create boto3 clients yourself, "
           "e.g. boto3.client('dynamodb')",
    "client": "start and drive instances with lambda-fsm's client: `from fsm import client; "
              "client.start(machine, context)`, or the `fsm` command",
    "config": "its settings.py module: lambda-fsm reads `settings:` in fsm.yaml, a settings file or FSM_* "
              "environment variables",
    "constants": "its key names: use the plain strings (context.correlation_id, context.steps, "
                 "obj['fence_token'], ...)",
    "handler": "its Lambda handlers: lambda-fsm's entry point is fsm.handler.lambda_handler",
    "serialization": "its JSON hooks: a lambda-fsm context holds plain JSON values",
    "state": "its State class: lambda-fsm builds machines from fsm.yaml (fsm.model.State)",
    "transition": "its Transition class: lambda-fsm builds machines from fsm.yaml (fsm.model.Transition)",
    "FSM": "its FSM factory: lambda-fsm builds machines from fsm.yaml (config.loader.load_file)",
    "utils": "ECSTaskEntryAction: use lambda-fsm's actions.ecs.RunTask (see examples/ecs/README.rst)",
}


class NotSupported(TransitionError):
    """A part of aws-lambda-fsm's API that lambda-fsm does not provide."""


class UnsupportedModule(NotSupported, ImportError):
    pass


class UnsupportedAttribute(NotSupported, AttributeError):
    pass


class UnsupportedKey(NotSupported, KeyError):
    def __str__(self) -> str:  # KeyError would quote the whole sentence
        return str(self.args[0])


def refuse_module(module: str) -> UnsupportedModule:
    """The error for importing aws-lambda-fsm's ``module`` (``aws_lambda_fsm.aws``)."""
    short = module.rpartition(".")[2]
    return UnsupportedModule(f"{module} is part of aws-lambda-fsm that lambda-fsm does not provide "
                             f"(only aws_lambda_fsm.action and aws_lambda_fsm.fsm.Context); instead of "
                             f"{MODULES[short]}", name=module)
