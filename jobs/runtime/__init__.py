"""What every stage runs on: a local or remote Ray (``cluster``), the cluster's capacity checked before work
starts (``capacity``), progress and notes for a person (``progress``), injected faults for rehearsing failures
(``faults``), and the base of every config section (``spec``). Imports no other stage."""
