"""Amazon States Language (Step Functions) on the statechart engine.

:mod:`config.asl` compiles a definition into machines whose actions live in
:mod:`fsm.asl.runtime`; the pieces they use: :mod:`~fsm.asl.paths` (JSONPath),
:mod:`~fsm.asl.intrinsics`, :mod:`~fsm.asl.data` (InputPath to OutputPath),
:mod:`~fsm.asl.choice`, :mod:`~fsm.asl.errors` (Retry and Catch), :mod:`~fsm.asl.tasks`
and :mod:`~fsm.asl.lambdas` (Task resources).
"""
