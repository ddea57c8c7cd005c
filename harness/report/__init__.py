"""What ``bench report`` and ``bench export`` add to the leaderboard: the protocol block and
cost of each section, figures from stored results and step logs, CSV and LaTeX exports."""
