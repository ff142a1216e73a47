"""Evidence of drills: the drill record (what a drill produced) and the REC reports made from it."""
