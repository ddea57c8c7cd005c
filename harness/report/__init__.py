"""What ``bench report`` and ``bench export`` add to the leaderboard, bottom up: the results
frame every table reads (``frame``), the protocol block and cost of each section
(``protocol``), figures from stored results and step logs (``figures``), CSV and LaTeX exports
(``export``), and ``bench report`` itself (``build``). The package's own module imports
nothing, so that ``harness.leaderboard`` can build on ``frame`` and ``protocol``."""
