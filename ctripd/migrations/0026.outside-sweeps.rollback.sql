DROP TABLE outside_sweeps;
