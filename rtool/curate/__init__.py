"""The data stage: which rows to distil and train on (decontaminate, difficulty, select).

Pure functions over rows; imports only the base, rtool.io, rtool.grade and rtool.generate. The commands
`rtool decontaminate`, `rtool difficulty` and `rtool select` are thin wiring over these modules.
"""
