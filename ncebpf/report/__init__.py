"""Reports over dumps: who used the link, by prefix, by domain or by peer (spec §11).

model (the data), sources (dump files and the running instance), aggregate
(pure: the groups), render_text / render_html / render_json (pure: the
formats).
"""
