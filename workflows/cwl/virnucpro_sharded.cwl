#!/usr/bin/env cwl-runner
# One sample over N jobs: virnucpro_predict.cwl scattered over `shards` (e.g. [1/4, 2/4, 3/4,
# 4/4]), then virnucpro_merge.cwl. Each predict job uses `servers`, or starts its own server
# (start_server + model_repository).
#
#   cwltool --validate workflows/cwl/virnucpro_sharded.cwl
cwlVersion: v1.2
class: Workflow
id: virnucpro_sharded
label: VirNucPro, one sample split over N predict jobs and merged
requirements:
  ScatterFeatureRequirement: {}

inputs:
  reads: File[]
  classifier: File
  chunk_size: int
  shards:
    type: string[]
    doc: one K/N per job, all N of them
  servers: string[]?
  start_server: boolean?
  model_repository: Directory?
  sample: string?
  save_embeddings: boolean?

steps:
  predict:
    run: virnucpro_predict.cwl
    scatter: shard
    in:
      reads: reads
      classifier: classifier
      chunk_size: chunk_size
      shard: shards
      servers: servers
      start_server: start_server
      model_repository: model_repository
      sample: sample
      save_embeddings: save_embeddings
      no_report: {default: true}
    out: [outdir]
  merge:
    run: virnucpro_merge.cwl
    in:
      shards: predict/outdir
    out: [outdir, prediction_results, highestscore, sequence_calls, run_json, report, embeddings]

outputs:
  outdir: {type: Directory, outputSource: merge/outdir}
  prediction_results: {type: File, outputSource: merge/prediction_results}
  highestscore: {type: File, outputSource: merge/highestscore}
  sequence_calls: {type: File, outputSource: merge/sequence_calls}
  run_json: {type: File, outputSource: merge/run_json}
  report: {type: File?, outputSource: merge/report}
  embeddings: {type: File?, outputSource: merge/embeddings}
