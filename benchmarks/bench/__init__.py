"""The benchmarks of jmapws_sync, one module per concern; ``benchmarks/run.py`` drives them.

* :mod:`.config` - the workload sizes (``--quick`` shrinks them) and the paths;
* :mod:`.server` - the reference server in a child process
  (:class:`jmapws_sync.testing.child.ServerProcess`) with the benchmark users and limits;
* :mod:`.clients` - jmapws_sync and the baselines behind one small interface;
* the workloads, each with a ``measure(server, cfg, res, with_jmaplib)``:
  :mod:`.rt` (sequential round trips), :mod:`.conc` (threads calling at once),
  :mod:`.push` (draining a push flood), :mod:`.large` (1 and 16 MiB answers),
  :mod:`.connect` (connect() and close()), :mod:`.idle` (idle sessions, in a fresh process),
  :mod:`.flood` (call() during a push flood), :mod:`.deflate` (with and without
  compression), :mod:`.sync` (ChangeFeed's first sync against a hand-written HTTP loop, on
  the reference server and Cyrus, and a resync's peak RSS, in a fresh process),
  :mod:`.blobs` (big transfers against curl, small uploads), :mod:`.transports`
  (EventSource against WebSocket push, calls over HTTP against the WebSocket);
* :mod:`.profiling` - cProfile of the caller and reader threads;
* :mod:`.stats` and :mod:`.results` - percentiles, medians, the samples of every figure;
* :mod:`.targets`, :mod:`.table`, :mod:`.report`, :mod:`.plot`, :mod:`.machine` - what the
  run prints and what ``--output`` writes (BENCHMARKS.md).

Run as ``python benchmarks/run.py``: the ``benchmarks`` directory is then on ``sys.path``
and this package is importable as ``bench``.
"""
