module mp3converter/functions/download

go 1.26
