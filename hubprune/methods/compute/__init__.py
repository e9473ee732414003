"""The passes the methods share (torch code): calibration statistics, greedy searches, KL fitness,
least-squares restoration, rotations. A method module imports them inside `select`, so that listing
and checking methods never imports torch."""
