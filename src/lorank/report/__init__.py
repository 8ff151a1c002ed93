"""Tables, figures and the HTML report built from the results store (:mod:`lorank.report.build`)."""
