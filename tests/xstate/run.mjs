// The XState side of the equivalence tests: run machine configs (plain JSON) under the
// real xstate v5 and print what a snapshot looks like after start and after every event.
//
// stdin, one of:
//   {"machine": <config>, "cases": [{"context"?: {...}, "events": [{"type": "E", ...data}]}]}
//   {"batch": [<the object above>, ...]}          (many machines, one node process)
// stdout: for a single machine {"cases": [[step, ...], ...]} or {"error": "..."};
//   for a batch {"batch": [<that>, ...]} in input order.
//   step = {"value": snapshot.value, "context": snapshot.context, "status": snapshot.status}
//   (plus "event": the event sent; the first step of a case is the one after start), and
//   "micro": the microsteps xstate took for it, each [eventType, [transition, ...]] listing
//   the transitions *selected* (for an event: before removeConflictingTransitions drops the preempted
//   ones: the log shows which actions really ran), with a
//   transition written "#source->#target1,#target2" ("+reenter" appended when set, then
//   " (always)" for an eventless one; no arrow: targetless) -- for debugging mismatches and
//   measuring coverage. An eventless microstep is listed under the event being processed.
//   A case whose run throws ends with {"error": "..."} as its last step.
//
// Named actions, guards and actors are a fixed set, mirrored in impl.py for lambda-fsm:
//   actions  inc (count += 1), log {params: {tag}} (log.push(tag)),
//            setFromEvent (last = event.value ?? null), setFromOutput (last = event.output ?? null)
//   guards   countBelow {params: {max}} (count < max), eventValueIs {params: {v}} (event.value === v),
//            yes (true), no (false)
//   actors   fetchOk (a promise resolving at once to {"ok": true}),
//            fetchFail (a promise rejecting at once with Error("boom"))
//
// Settling: an invoked fromPromise actor is started after the macrostep that entered its
// state, and its done/error event arrives later as an event of its own. After start and
// after each send we therefore yield to the event loop (setTimeout 0) until no child actor
// is active any more (bounded: MAX_TICKS), so every step reports a settled machine, the
// way lambda-fsm reports an instance once the steps an event caused have all run.
// Delayed (`after`) transitions are not settled: they would need real or simulated time.
//
// Safety: machines get options.maxIterations (MAX_MICROSTEPS) unless they set it, so an
// eventless loop fails the case instead of hanging node.

import { createMachine, createActor, assign, fromPromise } from 'xstate';

const MAX_TICKS = 50;
const MAX_MICROSTEPS = 1000;

const actions = {
  inc: assign({ count: ({ context }) => (context.count ?? 0) + 1 }),
  log: assign({ log: ({ context }, params) => [...(context.log ?? []), params.tag] }),
  setFromEvent: assign({ last: ({ event }) => event.value ?? null }),
  setFromOutput: assign({ last: ({ event }) => event.output ?? null })
};

const guards = {
  countBelow: ({ context }, params) => (context.count ?? 0) < params.max,
  eventValueIs: ({ event }, params) => event.value === params.v,
  yes: () => true,
  no: () => false
};

const actors = {
  fetchOk: fromPromise(async () => ({ ok: true })),
  fetchFail: fromPromise(async () => {
    throw new Error('boom');
  })
};

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

function plain(value) {
  // snapshot.value and context as JSON sees them (undefined dropped, objects copied)
  return value === undefined ? null : JSON.parse(JSON.stringify(value));
}

function message(err) {
  return String((err && err.message) || err).split('\n')[0];
}

async function settle(actor) {
  for (let i = 0; i < MAX_TICKS; i++) {
    const snapshot = actor.getSnapshot();
    const busy = Object.values(snapshot.children || {}).some(
      (child) => child && child.getSnapshot().status === 'active'
    );
    if (!busy) {
      return;
    }
    await tick();
  }
  throw new Error(`machine not settled after ${MAX_TICKS} ticks`);
}

function describe(t) {
  const targets = (t.target || []).map((n) => '#' + n.id).join(',');
  return '#' + t.source.id + (targets ? '->' + targets : '') + (t.reenter ? '+reenter' : '') +
    (t.eventType === '' ? ' (always)' : '');
}

function step(actor, event, failure, micro) {
  const snapshot = actor.getSnapshot();
  const out = {
    value: plain(snapshot.value),
    context: plain(snapshot.context),
    status: snapshot.status,
    micro: micro.splice(0)
  };
  if (event) {
    out.event = event;
  }
  if (failure) {
    out.error = failure;
  } else if (snapshot.status === 'error') {
    out.error = message(snapshot.error);
  }
  return out;
}

async function runCase(config, testCase) {
  const caseConfig = { ...config, options: { maxIterations: MAX_MICROSTEPS, ...(config.options || {}) } };
  if (testCase.context !== undefined) {
    caseConfig.context = testCase.context;
  }
  const machine = createMachine(caseConfig, { actions, guards, actors });
  let failure = null;
  const micro = [];
  const inspect = (ev) => {
    if (ev.type === '@xstate.microstep' && ev._transitions.length) {
      micro.push([ev.event.type, ev._transitions.map(describe)]);
    }
  };
  const actor = createActor(machine, { inspect });
  // Errors thrown while transitioning land here (and the snapshot becomes status "error");
  // without an observer xstate would rethrow them globally.
  actor.subscribe({ error: (err) => { failure = failure || message(err); } });
  const steps = [];
  try {
    actor.start();
    await settle(actor);
  } catch (err) {
    failure = failure || message(err);
  }
  steps.push(step(actor, null, failure, micro));
  for (const event of testCase.events || []) {
    if (failure) {
      break;
    }
    try {
      actor.send(event);
      await settle(actor);
    } catch (err) {
      failure = failure || message(err);
    }
    steps.push(step(actor, event, failure, micro));
  }
  actor.stop();
  return steps;
}

async function runMachine(job) {
  try {
    // Creation validates the config (targets, initial states, ...): fail the whole job.
    createMachine(job.machine, { actions, guards, actors });
  } catch (err) {
    return { error: message(err) };
  }
  const cases = [];
  for (const testCase of job.cases || [{ events: [] }]) {
    cases.push(await runCase(job.machine, testCase));
  }
  return { cases };
}

async function main() {
  let input = '';
  for await (const chunk of process.stdin) {
    input += chunk;
  }
  const request = JSON.parse(input);
  let result;
  if (Array.isArray(request.batch)) {
    result = { batch: [] };
    for (const job of request.batch) {
      result.batch.push(await runMachine(job));
    }
  } else {
    result = await runMachine(request);
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((err) => {
  process.stderr.write(`${(err && err.stack) || err}\n`);
  process.exit(1);
});
