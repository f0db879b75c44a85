# Step time vs sequence length from scripts/bench's t-sweep.dat (positions per step constant).
# usage: gnuplot -e "datafile='t-sweep.dat'; outfile='plot.png'" bench/t-sweep.gp
set terminal pngcairo size 800,500 font ",11"
set output outfile
set title "Prompt-tuning step, GPT-2 124M shape, constant positions per step"
set xlabel "sequence length (positions, incl. 20 soft tokens)"
set ylabel "step time (s)"
set logscale x 2
set xtics (128, 256, 512, 1024)
set yrange [0:*]
set key top left
set grid
plot datafile using 1:2 with linespoints lw 2 pt 7 title "softprompt", \
     datafile using 1:3 with linespoints lw 2 pt 5 title "PyTorch (HF + PEFT style)"
