"""Studies built on the library: each one a package of its own that uses spokentod and that nothing in the
library imports (only the CLI layer wires a study to its command)."""
