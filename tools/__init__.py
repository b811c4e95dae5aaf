"""tools: the dtn-node daemon, the dcis operator command, testbed, plots and demo."""
