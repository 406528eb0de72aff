"""The zoo: a family of backbones built from one spec, and the table and plot to choose one.

- `app.zoo.specs`: the shipped specs (``edgezoo zoo build cpu``), one YAML file each;
- `app.zoo.build`: a spec's entries, each one `edgezoo run`, and the build record;
- `app.zoo.table`: the zoo table (ZOO.md, ``edgezoo list --table``) from `zoo.catalog`'s index rows;
- `app.zoo.plot`: its accuracy-vs-latency plot and Pareto front;
- `app.zoo.cli`: ``edgezoo zoo build|table`` and ``edgezoo list``.
"""
