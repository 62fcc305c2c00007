"""Framework-free pieces (numpy, pandas, astropy; never torch): errors, catalogs, schemas, metrics, io."""
