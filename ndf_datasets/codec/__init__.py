"""The codec: one image or a batch <-> ``.ndf`` bytes (container format, coding, fields, fitting, decode)."""
