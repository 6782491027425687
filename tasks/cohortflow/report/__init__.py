"""placeholder"""
def write_report(*a, **k):
    class R: path = "none"
    return R()
def prune_reports(cfg):
    return []
