"""Run directories that survive being killed: numbering, choosing the run a command continues, and tidying up.

A run is one folder. A command that continues it (train.py --resume=DIR or --resume=auto, and the same
options of tools.train_encoder and tools.classifier) appends to its logs and snapshot sequence instead of
opening a new folder, so repeating the same command after every crash never redoes finished work.

The pieces here know nothing of networks: a caller says where its options file is, which option keys
may differ between the runs it counts as "the same" and how far a run has come; these functions do the
folder bookkeeping.
"""

import json
import os
import re
import time

import dnnlib

UserError = dnnlib.util.UserError

#----------------------------------------------------------------------------
# Numbered run directories.

def run_id(name):
    """The leading number of a run directory's name, or None."""
    match = re.match(r'\d+', name)
    return int(match.group()) if match else None


def list_runs(outdir):
    """Run directories of outdir (names starting with a number), oldest id first."""
    if not os.path.isdir(outdir):
        return []
    found = []
    for name in os.listdir(outdir):
        path = os.path.join(outdir, name)
        if run_id(name) is not None and os.path.isdir(path):
            found.append((run_id(name), name, path))
    return [path for _id, _name, path in sorted(found)]


def next_run_dir(outdir, desc):
    """<outdir>/<one more than the highest run id there, 5 digits>-<desc>."""
    ids = [run_id(os.path.basename(path)) for path in list_runs(outdir)]
    return os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')

#----------------------------------------------------------------------------
# Options: which runs count as the same.

def read_options(path):
    """A run's options file as a plain dict, or None when it is absent or unreadable."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def as_json(options):
    """The options as they read back from the options file (tuples become lists, EasyDicts dicts)."""
    return json.loads(json.dumps(options))


def flatten(options, prefix=''):
    """{'a.b.c': value} for nested dicts (lists and other values are leaves)."""
    flat = {}
    for key, value in options.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f'{prefix}{key}.'))
        else:
            flat[f'{prefix}{key}'] = value
    return flat


def differences(stored, wanted, ignore):
    """Sorted dotted keys ('loss_kwargs.r1_gamma') whose values differ between two option dicts, leaving out
    the top-level keys in `ignore`."""
    stored = flatten({k: v for k, v in as_json(stored).items() if k not in ignore})
    wanted = flatten({k: v for k, v in as_json(wanted).items() if k not in ignore})
    return sorted(key for key in set(stored) | set(wanted) if stored.get(key, '<absent>') != wanted.get(key, '<absent>'))


def describe_differences(stored, wanted, keys, limit=4):
    """'key: run has A, this command B; ...' for the first `limit` keys (values shortened)."""
    stored, wanted = flatten(as_json(stored)), flatten(as_json(wanted))
    short = lambda value: (text if len(text := json.dumps(value)) <= 40 else text[:37] + '...')
    parts = [f'{key}: run has {short(stored.get(key))}, this command {short(wanted.get(key))}' for key in keys[:limit]]
    more = f' (and {len(keys) - limit} more)' if len(keys) > limit else ''
    return '; '.join(parts) + more

#----------------------------------------------------------------------------
# Cleaning up after a kill.

TEMP_NAME = re.compile(r'^\..+\.tmp$')  # what dnnlib.util.atomic_write leaves behind when killed mid-write


def remove_temporaries(run_dir):
    """Delete the temporary files an interrupted atomic write left in run_dir; returns their names."""
    removed = []
    for name in sorted(os.listdir(run_dir)):
        path = os.path.join(run_dir, name)
        if TEMP_NAME.match(name) and os.path.isfile(path):
            os.remove(path)
            removed.append(name)
    return removed


def truncate_jsonl(path, keep):
    """Rewrite a JSON-lines log with only the records keep(record) accepts; a torn last line is dropped.

    Returns the number of records dropped. Nothing happens when the file does not exist."""
    if not os.path.isfile(path):
        return 0
    kept, dropped = [], 0
    with open(path) as f:
        for line in f:
            try:
                record = json.loads(line)
            except ValueError:
                dropped += 1
                continue
            if keep(record):
                kept.append(json.dumps(record) + '\n')
            else:
                dropped += 1
    if dropped:
        with dnnlib.util.atomic_write(path) as tmp, open(tmp, 'w') as f:
            f.writelines(kept)
    return dropped


def restart_line(what, progress):
    """The line a continued run's log gets: UTC time and where training picks up."""
    stamp = time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())
    return f'=== Restarted {stamp} from {what} ({progress}) ==='


def append_line(path, line):
    with open(path, 'a') as f:
        f.write(line + '\n')

#----------------------------------------------------------------------------
# Choosing the run to continue.

def newest_unfinished(candidates, is_finished):
    """(newest unfinished run, newest finished run) among candidate run dirs (oldest first); either may be None."""
    unfinished = [path for path in candidates if not is_finished(path)]
    finished = [path for path in candidates if path not in unfinished]
    return (unfinished[-1] if unfinished else None), (finished[-1] if finished else None)

#----------------------------------------------------------------------------
# train.py's runs.

TRAINING_OPTIONS = 'training_options.json'
# Where a run started from, and the two settings a start from a foreign pickle changes (transfer learning).
ORIGIN_KEYS = ('run_dir', 'resume_pkl', 'ada_kimg', 'ema_rampup')
# How a run reports and how fast it reads: free to change between restarts, never part of a run's identity.
REPORTING_KEYS = ('metrics', 'image_snapshot_ticks', 'network_snapshot_ticks', 'data_loader_kwargs',
                  'cudnn_benchmark', 'allow_tf32')
# An explicit --resume=DIR may also lengthen or shorten the run; --resume=auto counts the length as identity.
EXTENDABLE_KEYS = ('total_kimg',)


def is_train_run(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, TRAINING_OPTIONS))


def latest_state(run_dir):
    """(snapshot pickle, its training state) of the run's newest snapshot that has a state, or (None, None)."""
    import torch

    from training import training_loop
    try:
        pkl = training_loop.find_latest_snapshot(run_dir)
    except UserError:
        return None, None
    state_file = training_loop.state_path_for(pkl)
    if not os.path.isfile(state_file):
        return None, None
    return pkl, torch.load(state_file, map_location='cpu', weights_only=False, mmap=True)


def train_run_finished(run_dir, total_kimg):
    _pkl, state = latest_state(run_dir)
    return state is not None and state['cur_nimg'] >= total_kimg * 1000


def _exact_start(stored):
    """Whether a run started from nothing or from a snapshot with its training state (not transfer learning)."""
    from training import training_loop
    origin = stored.get('resume_pkl')
    if origin is None:
        return True
    state_file = training_loop.state_path_for(origin) if os.path.isfile(origin) else None
    return state_file is not None and os.path.isfile(state_file)


def _same_run(stored, wanted, extendable):
    ignore = ORIGIN_KEYS + REPORTING_KEYS + (EXTENDABLE_KEYS if extendable else ())
    return stored is not None and not differences(stored, wanted, ignore)


def follow_continuations(run_dir, search_dirs):
    """The newest run that continued run_dir in a folder of its own, as versions before the in-place resume did:
    a run with the same options started from one of run_dir's snapshots with its training state, followed
    on to its own continuations. Returns run_dir itself when there is none."""
    seen = {os.path.realpath(run_dir)}
    current = run_dir
    while True:
        stored = read_options(os.path.join(current, TRAINING_OPTIONS))
        followers = []
        for folder in dict.fromkeys(os.path.realpath(d) for d in search_dirs):
            for other in list_runs(folder):
                if os.path.realpath(other) in seen:
                    continue
                theirs = read_options(os.path.join(other, TRAINING_OPTIONS))
                origin = (theirs or {}).get('resume_pkl')
                if (not isinstance(origin, str) or not os.path.isfile(origin)
                        or os.path.realpath(os.path.dirname(origin)) != os.path.realpath(current)):
                    continue
                if _exact_start(theirs) and _same_run(stored, theirs, extendable=True):
                    _pkl, state = latest_state(other)
                    followers.append((state['cur_nimg'] if state is not None else -1, run_id(os.path.basename(other)), other))
        if not followers:
            return current
        current = max(followers)[2]
        seen.add(os.path.realpath(current))


def plan_train_run(outdir, desc, args, resume):
    """Where train.py trains: a new run dir, or an unfinished run continued in place.

    resume: None (a new run; args.resume_pkl may name a pickle to start from), 'auto' or a run dir.
    Returns an EasyDict: run_dir, args (the loop's kwargs), origin (the run's starting pickle, which goes into
    training_options.json), finished (nothing to do), notes (lines to print), restart (the log line, or None) and
    first_tick (the first tick a continued run trains).
    """
    args = dnnlib.EasyDict(args)
    plan = dnnlib.EasyDict(args=args, finished=False, notes=[], restart=None, origin=args.get('resume_pkl'))
    if resume is None:
        plan.run_dir = next_run_dir(outdir, desc)
        return plan
    if resume == 'auto':
        candidates = []
        for path in list_runs(outdir):
            stored = read_options(os.path.join(path, TRAINING_OPTIONS))
            if _same_run(stored, args, extendable=False) and _exact_start(stored):
                candidates.append(path)
        unfinished, finished = newest_unfinished(candidates, lambda path: train_run_finished(path, args.total_kimg))
        if unfinished is None and finished is not None:
            unfinished = finished
        if unfinished is None:
            plan.run_dir = next_run_dir(outdir, desc)
            plan.notes.append(f'--resume=auto: no run with these options in {outdir}; starting a new one')
            return plan
        plan = _continue(plan, unfinished, args)
        if not plan.finished:
            plan.notes.insert(0, f'--resume=auto: continuing {unfinished}')
        return plan
    newest = follow_continuations(resume, [os.path.dirname(os.path.abspath(resume)), outdir])
    if newest != resume:
        plan.notes.append(f'--resume: {resume} was continued in {newest} by an earlier version; continuing that run')
    stored = read_options(os.path.join(newest, TRAINING_OPTIONS))
    if stored is None:
        raise UserError(f'--resume: {newest}/{TRAINING_OPTIONS} is missing or unreadable')
    if not _same_run(stored, args, extendable=True):
        keys = differences(stored, args, ORIGIN_KEYS + REPORTING_KEYS + EXTENDABLE_KEYS)
        raise UserError(f'--resume: {newest} was trained with other options ({describe_differences(stored, args, keys)}); '
                        'repeat its options, or start a new run from one of its snapshots with --resume=PKL')
    return _continue(plan, newest, args)


def tidy_train_run(run_dir, first_tick):
    """Before a run continues in run_dir, what a killed process left behind: delete temporary files of interrupted
    writes and training states whose pickle never arrived, and drop the stats.jsonl lines of ticks from first_tick
    on (they are trained again). Returns a line per thing done."""
    done = [f'Removed {name}, left by an interrupted write' for name in remove_temporaries(run_dir)]
    for name in sorted(os.listdir(run_dir)):
        match = re.fullmatch(r'training-state-(.+)\.pt', name)
        if match and not os.path.isfile(os.path.join(run_dir, f'network-snapshot-{match.group(1)}.pkl')):
            os.remove(os.path.join(run_dir, name))
            done.append(f'Removed {name}, whose network snapshot was never written')
    dropped = truncate_jsonl(os.path.join(run_dir, 'stats.jsonl'),
                             lambda record: record.get('Progress/tick', {}).get('mean', -1) < first_tick)
    if dropped:
        done.append(f'Dropped {dropped} stats.jsonl line(s) of ticks trained again from tick {first_tick}')
    return done


def _continue(plan, run_dir, args):
    """Continue run_dir in place from its newest snapshot with a training state (or from its start if none)."""
    stored = read_options(os.path.join(run_dir, TRAINING_OPTIONS))
    args = dnnlib.EasyDict(args)
    for key in ('ada_kimg', 'ema_rampup'):  # as the run started: a transfer start set them
        args.pop(key, None)
        if key in stored:
            args[key] = stored[key]
    plan.update(run_dir=run_dir, args=args, origin=stored.get('resume_pkl'))
    args.run_dir = run_dir
    pkl, state = latest_state(run_dir)
    snapshots = [name for name in os.listdir(run_dir) if name.startswith('network-snapshot-') and name.endswith('.pkl')]
    if state is None and snapshots:
        raise UserError(f'--resume: the snapshots in {run_dir} have no training state to continue from exactly; '
                        'start a new run from one of them with --resume=PKL')
    if state is not None and state['cur_nimg'] >= args.total_kimg * 1000:
        plan.finished = True
        plan.notes.append(f'{run_dir} has finished: {state["cur_nimg"] / 1000:g} of {args.total_kimg:g} kimg '
                          f'({os.path.basename(pkl)}); nothing to do')
        return plan
    plan.first_tick = 0 if state is None else state['cur_tick']
    if state is None:
        args.resume_pkl = plan.origin
        plan.restart = restart_line('the start', 'no snapshot had been written')
    else:
        args.resume_pkl = pkl
        plan.restart = restart_line(os.path.basename(pkl), f'kimg {state["cur_nimg"] / 1000:.3f}, tick {state["cur_tick"] - 1}')
    return plan

#----------------------------------------------------------------------------
