{
  "targets": [
    {
      "target_name": "certfleet_sd_notify",
      "sources": ["sd_notify.c"],
      "cflags": ["-Wall", "-Wextra", "-O2"]
    }
  ]
}
