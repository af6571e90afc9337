"""On-site calibration for technicians: ``wastesort calibrate camera|scale|belt|gates``.

Every step works headless (camera, recorded video or images in; results printed, saved as a
JSON report and written into the daemon's config file); a preview window is optional.
"""
