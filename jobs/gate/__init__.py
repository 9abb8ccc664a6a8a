"""The quality gate: a model's references (``references``, built after training), the figures of a set of
outputs (``figures``, ``lift``), and the decisions (``policy``): is a candidate promoted, is a night published."""
