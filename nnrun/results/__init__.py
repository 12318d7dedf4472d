"""Reading finished run directories: the runs table, comparisons and the HTML report."""
