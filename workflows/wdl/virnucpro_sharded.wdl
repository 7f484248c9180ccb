version 1.0

# One sample over many machines: `n_shards` tasks each run `orchestrator predict --shard K/N`
# (a part of the records, split by bases), then one task joins them with `orchestrator merge`
# into the files one unsharded run would write, byte for byte. Each shard task talks to the
# Triton service at `triton_url`, or, without it, starts a private tritonserver on its own GPU VM
# (`predict --start-server`, in the server image).

workflow virnucpro_sharded {
  input {
    File      reads_input
    Int       expected_length = 300
    Int       n_shards = 4
    String?   triton_url
    File?     classifier
    Boolean   save_embeddings = false
    Boolean   use_gpu = true
    String?   gpu_type
    Int?      gpu_count
    String?   accelerator_type
    Int?      accelerator_count
    String    model_repository = "/models"
    String    docker = "virnucpro-client:0.1.0"
    String    server_docker = "virnucpro-triton-baked:0.1.0"
  }

  String basename = sub(basename(reads_input), "\\.(bam|cram|sam|fastq\\.gz|fq\\.gz|fastq|fq|fasta\\.gz|fa\\.gz|fasta|fa)$", "")

  scatter (k in range(n_shards)) {
    call predict_shard {
      input:
        reads_input = reads_input, expected_length = expected_length,
        shard = "~{k + 1}/~{n_shards}", sample = basename, triton_url = triton_url,
        classifier = classifier, save_embeddings = save_embeddings, use_gpu = use_gpu,
        gpu_type = gpu_type, gpu_count = gpu_count, accelerator_type = accelerator_type,
        accelerator_count = accelerator_count, model_repository = model_repository,
        docker = docker, server_docker = server_docker
    }
  }

  call merge_shards {
    input: shards = predict_shard.shard_tar, basename = basename, docker = docker
  }

  output {
    File virnuc_pro_scores = merge_shards.virnuc_pro_scores
    File prediction_results = merge_shards.prediction_results
    File highestscore = merge_shards.highestscore
    File run_json = merge_shards.run_json
    File sequence_calls = merge_shards.sequence_calls
    File viral_regions = merge_shards.viral_regions
    File viral_regions_bed = merge_shards.viral_regions_bed
    File chunk_scores_bedgraph = merge_shards.chunk_scores_bedgraph
    File report = merge_shards.report
    File contigs_classified = merge_shards.contigs_classified
    File multiqc_summary = merge_shards.multiqc_summary
    File multiqc_calls = merge_shards.multiqc_calls
    Array[File] embeddings = merge_shards.embeddings
  }
}

task predict_shard {
  meta {
    description: "orchestrator predict --shard K/N: one part of a sample, its whole output folder as a tar."
  }

  input {
    File      reads_input
    Int       expected_length
    String    shard
    String    sample
    String?   triton_url
    File?     classifier
    Boolean   save_embeddings
    Boolean   use_gpu
    String?   gpu_type
    Int?      gpu_count
    String?   accelerator_type
    Int?      accelerator_count
    String    model_repository
    String    docker
    String    server_docker
  }

  String classifier_path = select_first([classifier, "/artifacts/classifiers/~{expected_length}_model.pth"])
  Boolean own_server = !defined(triton_url)
  Boolean want_gpu = own_server && use_gpu
  String serving = if own_server then "--start-server --model-repository '" + model_repository + "'" else "--server '" + select_first([triton_url, ""]) + "'"

  command <<<
    set -euo pipefail
    orchestrator predict "~{reads_input}" -o shard \
      --shard "~{shard}" \
      --chunk-size ~{expected_length} \
      --classifier "~{classifier_path}" \
      ~{serving} \
      --sample "~{sample}" \
      ~{if save_embeddings then "--save-embeddings" else ""} \
      --no-report --no-progress
    tar -cf shard.tar shard
  >>>

  output {
    File shard_tar = "shard.tar"
  }

  runtime {
    docker: if own_server then server_docker else docker
    memory: if own_server then "32 GB" else "4 GB"
    cpu: if own_server then 8 else 2
    gpu: want_gpu
    gpuType: select_first([gpu_type, "nvidia-tesla-t4"])
    gpuCount: if want_gpu then select_first([gpu_count, 1]) else 0
    acceleratorType: select_first([accelerator_type, "nvidia-tesla-t4"])  # !UnknownRuntimeKey
    acceleratorCount: if want_gpu then select_first([accelerator_count, 1]) else 0  # !UnknownRuntimeKey
    disks: "local-disk 50 SSD"
    disk: "50 GB"
    maxRetries: 1
  }
}

task merge_shards {
  meta {
    description: "orchestrator merge: the shards' folders as the files of one unsharded run."
  }

  input {
    Array[File] shards
    String      basename
    String      docker
  }

  command <<<
    set -euo pipefail
    mkdir shards
    i=0
    for t in ~{sep=" " shards}; do
      i=$((i + 1))
      mkdir "shards/$i"
      tar -xf "$t" -C "shards/$i"
    done
    orchestrator merge shards/*/shard -o out --no-progress
    cp out/prediction_results.txt "~{basename}.virnucpro.tsv"
    cp out/prediction_results_highestscore.csv "~{basename}.virnucpro_highestscore.csv"
    tar -czf "~{basename}.virnucpro.tgz" \
      "~{basename}.virnucpro.tsv" \
      "~{basename}.virnucpro_highestscore.csv"
  >>>

  output {
    File virnuc_pro_scores = "~{basename}.virnucpro.tgz"
    File prediction_results = "~{basename}.virnucpro.tsv"
    File highestscore = "~{basename}.virnucpro_highestscore.csv"
    File run_json = "out/run.json"
    File sequence_calls = "out/sequence_calls.tsv"
    File viral_regions = "out/viral_regions.tsv"
    File viral_regions_bed = "out/viral_regions.bed"
    File chunk_scores_bedgraph = "out/chunk_scores.bedgraph"
    File report = "out/report.html"
    File contigs_classified = "out/contigs_classified.tsv"
    File multiqc_summary = "out/virnucpro_mqc.tsv"
    File multiqc_calls = "out/virnucpro_calls_mqc.tsv"
    Array[File] embeddings = glob("out/embeddings.h5")
  }

  runtime {
    docker: docker
    memory: "4 GB"
    cpu: 2
    disks: "local-disk 100 SSD"
    disk: "100 GB"
    maxRetries: 1
  }
}
