"""`ncebpf top`: a live view of who uses the link now (README "ncebpf top").

feed.py     the daemon's side: which peers moved since a caller's cursor (pure, numpy)
wire.py     the answer's bytes on the control socket, both ways (pure)
serve.py    the daemon's loop hands answers to short sender threads
client.py   asks the running instance over its control socket
rates.py    2/10/40-second averages from cumulative counters (pure)
view.py     rates, grouping, sorting and the filter into one view model (pure)
render.py   a view model into a rich renderable or plain text (pure)
screen.py   the terminal loop: rich Live, keys, --batch
"""
